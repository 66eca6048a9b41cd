#include "vilau/vision/preprocess.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "vilau/core/error.h"

namespace vilau {

namespace {

// Pillow's resampling (libImaging/Resample.c), reimplemented: Keys' cubic with a = -0.5,
// support widened by the scale when shrinking, coefficients normalised in double. uint8
// images round them to 22-bit fixed point and store a uint8 image between the horizontal
// and the vertical pass; mode "F" images accumulate in double and store float32.
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

struct Window {
  int64_t ksize = 0;
  std::vector<int64_t> first, count;  // source window per output pixel
  std::vector<double> weights;        // [out, ksize], normalised
};

Window window(int64_t in_size, int64_t out_size) {
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double filter_scale = std::max(scale, 1.0);
  // Pillow multiplies by the reciprocal; dividing differs in the last bit now and then.
  const double inverse_scale = 1.0 / filter_scale;
  const double support = 2.0 * filter_scale;
  Window c;
  c.ksize = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  c.weights.assign(out_size * c.ksize, 0.0);
  for (int64_t xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const int64_t xmin = std::max<int64_t>(0, static_cast<int64_t>(center - support + 0.5));
    const int64_t xmax =
        std::min<int64_t>(in_size, static_cast<int64_t>(center + support + 0.5)) - xmin;
    double* k = &c.weights[xx * c.ksize];
    double total = 0.0;
    for (int64_t x = 0; x < xmax; ++x) {
      k[x] = bicubic((x + xmin - center + 0.5) * inverse_scale);
      total += k[x];
    }
    for (int64_t x = 0; x < xmax && total != 0.0; ++x) {
      k[x] /= total;
    }
    c.first.push_back(xmin);
    c.count.push_back(xmax);
  }
  return c;
}

// Pillow's ImagingResample{Horizontal,Vertical}_8bpc.
struct Uint8Pass {
  using Pixel = uint8_t;
  using Weight = int32_t;
  using Accumulator = int64_t;
  static constexpr c10::ScalarType kType = c10::kByte;
  static Weight weight(double w) {
    return static_cast<int32_t>(w < 0 ? -0.5 + w * (1 << kPrecisionBits)
                                      : 0.5 + w * (1 << kPrecisionBits));
  }
  static Accumulator start() { return Accumulator{1} << (kPrecisionBits - 1); }
  static Pixel store(Accumulator acc) {
    return static_cast<uint8_t>(
        std::clamp<int64_t>(acc >> kPrecisionBits, 0, 255));  // arithmetic shift: floor
  }
};

// Pillow's ImagingResample{Horizontal,Vertical}_32bpc for IMAGING_TYPE_FLOAT32.
struct FloatPass {
  using Pixel = float;
  using Weight = double;
  using Accumulator = double;
  static constexpr c10::ScalarType kType = c10::kFloat;
  static Weight weight(double w) { return w; }
  static Accumulator start() { return 0.0; }
  static Pixel store(Accumulator acc) { return static_cast<float>(acc); }
};

// One pass along `axis` (0: rows, 1: columns) of an [H, W, C] image.
template <class Pass>
at::Tensor resample_axis(const at::Tensor& in, int64_t axis, int64_t out_size) {
  const int64_t h = in.size(0), w = in.size(1), channels = in.size(2), in_size = in.size(axis);
  const Window c = window(in_size, out_size);
  std::vector<typename Pass::Weight> weights(c.weights.size());
  std::transform(c.weights.begin(), c.weights.end(), weights.begin(), Pass::weight);
  at::Tensor out = torch::empty({axis == 0 ? out_size : h, axis == 1 ? out_size : w, channels},
                                torch::dtype(Pass::kType));
  const auto* src = in.data_ptr<typename Pass::Pixel>();
  auto* dst = out.data_ptr<typename Pass::Pixel>();
  const int64_t other = axis == 0 ? w : h;
  for (int64_t o = 0; o < other; ++o) {
    for (int64_t xx = 0; xx < out_size; ++xx) {
      for (int64_t ch = 0; ch < channels; ++ch) {
        typename Pass::Accumulator acc = Pass::start();
        for (int64_t x = 0; x < c.count[xx]; ++x) {
          const int64_t pos = c.first[xx] + x;
          const int64_t index =
              axis == 0 ? (pos * w + o) * channels + ch : (o * w + pos) * channels + ch;
          acc += static_cast<typename Pass::Accumulator>(src[index]) * weights[xx * c.ksize + x];
        }
        const int64_t target =
            axis == 0 ? (xx * w + o) * channels + ch : (o * out_size + xx) * channels + ch;
        dst[target] = Pass::store(acc);
      }
    }
  }
  return out;
}

// Pillow's RGBA -> RGBa (rgbA2rgba): each colour times alpha / 255, rounded as its
// MULDIV255 does.
at::Tensor premultiply(const at::Tensor& rgba) {
  at::Tensor out = rgba.clone();
  uint8_t* p = out.data_ptr<uint8_t>();
  for (int64_t i = 0; i < out.numel(); i += 4) {
    const uint32_t alpha = p[i + 3];
    for (int c = 0; c < 3; ++c) {
      const uint32_t t = p[i + c] * alpha + 128;
      p[i + c] = static_cast<uint8_t>(((t >> 8) + t) >> 8);
    }
  }
  return out;
}

// Pillow's RGBa -> RGBA (rgba2rgbA): colour * 255 / alpha, truncated and clipped; alpha 0
// and 255 leave the colour as it is.
at::Tensor unpremultiply(at::Tensor rgba) {
  uint8_t* p = rgba.data_ptr<uint8_t>();
  for (int64_t i = 0; i < rgba.numel(); i += 4) {
    const uint32_t alpha = p[i + 3];
    if (alpha == 0 || alpha == 255) continue;
    for (int c = 0; c < 3; ++c) {
      p[i + c] = static_cast<uint8_t>(std::min<uint32_t>(255, 255 * p[i + c] / alpha));
    }
  }
  return rgba;
}

template <class Pass>
at::Tensor resize(at::Tensor x, int64_t width, int64_t height) {
  // Pillow resizes horizontally first, then vertically, each only when the size changes.
  if (x.size(1) != width) {
    x = resample_axis<Pass>(x, 1, width);
  }
  if (x.size(0) != height) {
    x = resample_axis<Pass>(x, 0, height);
  }
  return x;
}

}  // namespace

at::Tensor pil_bicubic_resize(const at::Tensor& rgb, int64_t width, int64_t height) {
  if (rgb.dim() != 3 || (rgb.size(2) != 3 && rgb.size(2) != 4) ||
      rgb.scalar_type() != torch::kUInt8) {
    throw ShapeError(
        describe("pil_bicubic_resize", "input", "RGB or RGBA uint8 [H, W, 3 or 4]",
                 std::string(c10::toString(rgb.scalar_type())) + " " + c10::str(rgb.sizes())));
  }
  if (rgb.size(2) == 3 || (rgb.size(0) == height && rgb.size(1) == width)) {
    return resize<Uint8Pass>(rgb.contiguous(), width, height);  // same size: a copy
  }
  // Pillow resizes RGBA as premultiplied RGBa and converts back (Image.resize), so that
  // transparent pixels do not bleed their colour into their neighbours.
  return unpremultiply(resize<Uint8Pass>(premultiply(rgb.contiguous()), width, height));
}

at::Tensor pil_bicubic_resize_float(const at::Tensor& image, int64_t width, int64_t height) {
  if (image.dim() != 3 || image.scalar_type() != torch::kFloat || !image.device().is_cpu()) {
    throw ShapeError(
        describe("pil_bicubic_resize_float", "input", "CPU float32 [H, W, C]",
                 std::string(c10::toString(image.scalar_type())) + " " + c10::str(image.sizes())));
  }
  return resize<FloatPass>(image.contiguous(), width, height);
}

at::Tensor preprocess_image(const at::Tensor& rgb, int64_t size) {
  // RGBA is resized with its alpha, which is dropped afterwards (convert("RGB")).
  const at::Tensor resized = pil_bicubic_resize(rgb, size, size).narrow(2, 0, 3);
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
