#include "vilau/vision/preprocess.h"

#include <torch/torch.h>

#include <cmath>

#include "vilau/core/error.h"

namespace vilau {

namespace F = torch::nn::functional;

at::Tensor preprocess_image(const at::Tensor& rgb, int64_t size) {
  if (rgb.dim() != 3 || rgb.size(2) != 3 || rgb.scalar_type() != torch::kUInt8) {
    throw ShapeError(
        describe("preprocess_image", "input", "RGB uint8 [H, W, 3]",
                 std::string(c10::toString(rgb.scalar_type())) + " " + c10::str(rgb.sizes())));
  }
  at::Tensor x = rgb.permute({2, 0, 1}).unsqueeze(0).to(torch::kFloat);
  if (x.size(2) != size || x.size(3) != size) {
    x = F::interpolate(x, F::InterpolateFuncOptions()
                              .size(std::vector<int64_t>{size, size})
                              .mode(torch::kBicubic)
                              .align_corners(false)
                              .antialias(true));
    x = x.round().clamp(0, 255);  // Pillow resizes in uint8
  }
  return (x.squeeze(0) / 255.0 - 0.5) / 0.5;
}

at::Tensor square_crop(const at::Tensor& rgb) {
  const int64_t h = rgb.size(0), w = rgb.size(1), side = std::min(h, w);
  if (w < h) {
    return rgb.slice(0, 0, side);
  }
  // torchvision's CenterCrop rounds half to even, as nearbyint does by default.
  const auto top = static_cast<int64_t>(std::nearbyint((h - side) / 2.0));
  const auto left = static_cast<int64_t>(std::nearbyint((w - side) / 2.0));
  return rgb.slice(0, top, top + side).slice(1, left, left + side);
}

at::Tensor postprocess_image(const at::Tensor& pixels) {
  if (pixels.dim() != 4 || pixels.size(1) != 3) {
    throw ShapeError(
        describe("postprocess_image", "input", "[B, 3, S, S]", c10::str(pixels.sizes())));
  }
  return ((pixels.to(torch::kFloat) + 1.0) * 127.5)
      .clamp(0, 255)
      .to(torch::kUInt8)
      .permute({0, 2, 3, 1})
      .contiguous();
}

}  // namespace vilau
