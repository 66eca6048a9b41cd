#include "vilau/data/transforms.h"

#include <torch/torch.h>

#include <cmath>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <vector>

#include "vilau/core/error.h"
#include "vilau/vision/preprocess.h"

namespace vilau::data {

namespace {

// int(0.5 * 255): the SigLIP processor's mean, as expand2square computes the fill.
constexpr uint8_t kMeanColour = 127;

}  // namespace

at::Tensor decode_image(const std::string& bytes, const std::string& where) {
  cv::Mat bgr;
  try {
    const cv::Mat raw(1, static_cast<int>(bytes.size()), CV_8UC1, const_cast<char*>(bytes.data()));
    if (!bytes.empty()) {
      bgr = cv::imdecode(raw, cv::IMREAD_COLOR);
    }
  } catch (const cv::Exception& e) {
    throw FormatError(
        describe(where, "cannot decode image", "a PNG, JPEG or other OpenCV format", e.what()));
  }
  if (bgr.empty()) {
    throw FormatError(
        describe(where, "cannot decode image", "a PNG, JPEG or other OpenCV format",
                 "a corrupt or unsupported image of " + std::to_string(bytes.size()) + " bytes"));
  }
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return torch::from_blob(rgb.data, {rgb.rows, rgb.cols, 3}, torch::kUInt8).clone();
}

at::Tensor pad_to_square(const at::Tensor& rgb) {
  const int64_t h = rgb.size(0), w = rgb.size(1);
  if (h == w) {
    return rgb;
  }
  const int64_t side = std::max(h, w);
  at::Tensor out = torch::full({side, side, 3}, kMeanColour, torch::kUInt8);
  const int64_t top = (side - h) / 2, left = (side - w) / 2;
  out.slice(0, top, top + h).slice(1, left, left + w).copy_(rgb);
  return out;
}

at::Tensor center_square(const at::Tensor& rgb) {
  const int64_t h = rgb.size(0), w = rgb.size(1), side = std::min(h, w);
  const auto top = static_cast<int64_t>(std::nearbyint((h - side) / 2.0));
  const auto left = static_cast<int64_t>(std::nearbyint((w - side) / 2.0));
  return rgb.slice(0, top, top + side).slice(1, left, left + side);
}

at::Tensor transform_image(const at::Tensor& rgb, ResizeMode mode, int64_t size, bool flip) {
  at::Tensor square;
  switch (mode) {
    case ResizeMode::resize:
      square = rgb;
      break;
    case ResizeMode::pad:
      square = pad_to_square(rgb);
      break;
    case ResizeMode::center_crop:
      square = center_square(rgb);
      break;
    case ResizeMode::square_crop:
      square = square_crop(rgb);
      break;
  }
  at::Tensor pixels = preprocess_image(square.contiguous(), size);
  return flip ? pixels.flip({2}).contiguous() : pixels;
}

}  // namespace vilau::data
