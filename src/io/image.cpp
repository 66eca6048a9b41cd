#include "vilau/io/image.h"

#include <torch/torch.h>

#include <filesystem>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "vilau/core/error.h"
#include "vilau/io/atomic_file.h"

namespace vilau::io {

namespace {

// The file decoded by OpenCV with `flags`; IoError or FormatError naming it.
cv::Mat decode_file(const std::string& path, int flags) {
  if (!std::filesystem::is_regular_file(path)) {
    throw IoError(describe(path, "cannot read image", "an image file", "no such file"));
  }
  cv::Mat image;
  try {
    image = cv::imread(path, flags);
  } catch (const cv::Exception& e) {
    throw FormatError(
        describe(path, "cannot decode image", "a PNG, JPEG or other OpenCV format", e.what()));
  }
  if (image.empty()) {
    throw FormatError(describe(path, "cannot decode image", "a PNG, JPEG or other OpenCV format",
                               "a corrupt or unsupported file"));
  }
  return image;
}

at::Tensor to_tensor(const cv::Mat& image) {
  return torch::from_blob(image.data, {image.rows, image.cols, image.channels()}, torch::kUInt8)
      .clone();
}

}  // namespace

at::Tensor read_image(const std::string& path) {
  cv::Mat rgb;
  cv::cvtColor(decode_file(path, cv::IMREAD_COLOR), rgb, cv::COLOR_BGR2RGB);
  return to_tensor(rgb);
}

at::Tensor read_image_with_alpha(const std::string& path) {
  const cv::Mat raw = decode_file(path, cv::IMREAD_UNCHANGED);
  // Without alpha, or deeper than 8 bits: read_image's conversion (which also applies a
  // JPEG's EXIF orientation, as IMREAD_UNCHANGED does not).
  if (raw.depth() != CV_8U || (raw.channels() != 2 && raw.channels() != 4)) {
    return read_image(path);
  }
  cv::Mat rgba;
  if (raw.channels() == 4) {
    cv::cvtColor(raw, rgba, cv::COLOR_BGRA2RGBA);
  } else {  // grey and alpha: Pillow's LA, which converts to RGB by repeating the grey
    std::vector<cv::Mat> planes;
    cv::split(raw, planes);
    cv::merge(std::vector<cv::Mat>{planes[0], planes[0], planes[0], planes[1]}, rgba);
  }
  return to_tensor(rgba);
}

void write_image(const std::string& path, const at::Tensor& rgb) {
  if (rgb.dim() != 3 || rgb.size(2) != 3 || rgb.scalar_type() != torch::kUInt8) {
    throw ShapeError(
        describe(path, "image to write", "uint8 [H, W, 3]",
                 std::string(c10::toString(rgb.scalar_type())) + " " + c10::str(rgb.sizes())));
  }
  const at::Tensor cpu = rgb.to(torch::kCPU).contiguous();
  const cv::Mat view(static_cast<int>(cpu.size(0)), static_cast<int>(cpu.size(1)), CV_8UC3,
                     cpu.data_ptr());
  cv::Mat bgr;
  cv::cvtColor(view, bgr, cv::COLOR_RGB2BGR);
  std::vector<uchar> bytes;
  const std::string ext = std::filesystem::path(path).extension().string();
  try {
    if (!cv::imencode(ext.empty() ? ".png" : ext, bgr, bytes)) {
      throw FormatError(
          describe(path, "cannot encode image", "a .png or .jpg name", "'" + ext + "'"));
    }
  } catch (const cv::Exception& e) {
    throw FormatError(describe(path, "cannot encode image", "a .png or .jpg name", e.what()));
  }
  write_file_atomic(path,
                    std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

}  // namespace vilau::io
