#include "vilau/io/image.h"

#include <torch/torch.h>

#include <filesystem>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "vilau/core/error.h"
#include "vilau/io/atomic_file.h"

namespace vilau::io {

at::Tensor read_image(const std::string& path) {
  if (!std::filesystem::is_regular_file(path)) {
    throw IoError(describe(path, "cannot read image", "an image file", "no such file"));
  }
  cv::Mat bgr;
  try {
    bgr = cv::imread(path, cv::IMREAD_COLOR);
  } catch (const cv::Exception& e) {
    throw FormatError(
        describe(path, "cannot decode image", "a PNG, JPEG or other OpenCV format", e.what()));
  }
  if (bgr.empty()) {
    throw FormatError(describe(path, "cannot decode image", "a PNG, JPEG or other OpenCV format",
                               "a corrupt or unsupported file"));
  }
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return torch::from_blob(rgb.data, {rgb.rows, rgb.cols, 3}, torch::kUInt8).clone();
}

at::Tensor read_image_with_alpha(const std::string& path) {
  if (!std::filesystem::is_regular_file(path)) {
    throw IoError(describe(path, "cannot read image", "an image file", "no such file"));
  }
  cv::Mat raw;
  try {
    raw = cv::imread(path, cv::IMREAD_UNCHANGED);
  } catch (const cv::Exception& e) {
    throw FormatError(
        describe(path, "cannot decode image", "a PNG, JPEG or other OpenCV format", e.what()));
  }
  // Without alpha, or deeper than 8 bits: read_image's conversion.
  if (raw.empty() || raw.depth() != CV_8U || (raw.channels() != 2 && raw.channels() != 4)) {
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
  return torch::from_blob(rgba.data, {rgba.rows, rgba.cols, 4}, torch::kUInt8).clone();
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
