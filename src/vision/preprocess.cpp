#include "vilau/vision/preprocess.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "vilau/core/error.h"

namespace vilau {

namespace {

// Pillow's resampling (libImaging/Resample.c), reimplemented: Keys' cubic with a = -0.5,
// support widened by the scale when shrinking, coefficients normalised then rounded to
// 22-bit fixed point, and a uint8 image between the horizontal and the vertical pass.
constexpr int kPrecisionBits = 32 - 8 - 2;

double bicubic(double x) {
  constexpr double a = -0.5;
  x = std::abs(x);
  if (x < 1.0) {
    return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  }
  if (x < 2.0) {
    return (((x - 5) * x + 8) * x - 4) * a;
  }
  return 0.0;
}

struct Coefficients {
  int64_t ksize = 0;
  std::vector<int64_t> first, count;  // source window per output pixel
  std::vector<int32_t> weights;       // [out, ksize], fixed point
};

Coefficients coefficients(int64_t in_size, int64_t out_size) {
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double filter_scale = std::max(scale, 1.0);
  const double support = 2.0 * filter_scale;
  Coefficients c;
  c.ksize = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  c.weights.assign(out_size * c.ksize, 0);
  std::vector<double> k(c.ksize);
  for (int64_t xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const int64_t xmin = std::max<int64_t>(0, static_cast<int64_t>(center - support + 0.5));
    const int64_t xmax =
        std::min<int64_t>(in_size, static_cast<int64_t>(center + support + 0.5)) - xmin;
    double total = 0.0;
    for (int64_t x = 0; x < xmax; ++x) {
      k[x] = bicubic((x + xmin - center + 0.5) / filter_scale);
      total += k[x];
    }
    for (int64_t x = 0; x < xmax; ++x) {
      const double w = total != 0.0 ? k[x] / total : k[x];
      c.weights[xx * c.ksize + x] = static_cast<int32_t>(w < 0 ? -0.5 + w * (1 << kPrecisionBits)
                                                               : 0.5 + w * (1 << kPrecisionBits));
    }
    c.first.push_back(xmin);
    c.count.push_back(xmax);
  }
  return c;
}

uint8_t clip8(int64_t acc) {
  return static_cast<uint8_t>(
      std::clamp<int64_t>(acc >> kPrecisionBits, 0, 255));  // arithmetic shift: floor
}

// One pass along `axis` (0: rows, 1: columns) of an [H, W, 3] uint8 image.
at::Tensor resample_axis(const at::Tensor& in, int64_t axis, int64_t out_size) {
  const int64_t h = in.size(0), w = in.size(1), in_size = in.size(axis);
  const Coefficients c = coefficients(in_size, out_size);
  at::Tensor out =
      torch::empty({axis == 0 ? out_size : h, axis == 1 ? out_size : w, 3}, torch::kUInt8);
  const uint8_t* src = in.data_ptr<uint8_t>();
  uint8_t* dst = out.data_ptr<uint8_t>();
  const int64_t other = axis == 0 ? w : h;
  for (int64_t o = 0; o < other; ++o) {
    for (int64_t xx = 0; xx < out_size; ++xx) {
      for (int64_t ch = 0; ch < 3; ++ch) {
        int64_t acc = int64_t{1} << (kPrecisionBits - 1);
        for (int64_t x = 0; x < c.count[xx]; ++x) {
          const int64_t pos = c.first[xx] + x;
          const int64_t index = axis == 0 ? (pos * w + o) * 3 + ch : (o * w + pos) * 3 + ch;
          acc += static_cast<int64_t>(src[index]) * c.weights[xx * c.ksize + x];
        }
        const int64_t target = axis == 0 ? (xx * w + o) * 3 + ch : (o * out_size + xx) * 3 + ch;
        dst[target] = clip8(acc);
      }
    }
  }
  return out;
}

}  // namespace

at::Tensor pil_bicubic_resize(const at::Tensor& rgb, int64_t width, int64_t height) {
  if (rgb.dim() != 3 || rgb.size(2) != 3 || rgb.scalar_type() != torch::kUInt8) {
    throw ShapeError(
        describe("pil_bicubic_resize", "input", "RGB uint8 [H, W, 3]",
                 std::string(c10::toString(rgb.scalar_type())) + " " + c10::str(rgb.sizes())));
  }
  at::Tensor x = rgb.contiguous();
  // Pillow resizes horizontally first, then vertically, each only when the size changes.
  if (x.size(1) != width) {
    x = resample_axis(x, 1, width);
  }
  if (x.size(0) != height) {
    x = resample_axis(x, 0, height);
  }
  return x;
}

at::Tensor preprocess_image(const at::Tensor& rgb, int64_t size) {
  const at::Tensor resized = pil_bicubic_resize(rgb, size, size);
  return (resized.permute({2, 0, 1}).to(torch::kFloat) / 255.0 - 0.5) / 0.5;
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
