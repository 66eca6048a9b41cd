#include "vilau/eval/image_metrics.h"

#include <torch/torch.h>

#include <cmath>

#include "vilau/core/error.h"

namespace vilau::eval {
namespace {

constexpr int64_t kRadius = 5;  // scikit-image: int(truncate 3.5 * sigma 1.5 + 0.5)
constexpr double kSigma = 1.5;

// Separable Gaussian of every channel plane [P, 1, H, W] -> [P, 1, H - 10, W - 10]: only the
// positions whose whole window is inside, which is what scikit-image keeps after cropping.
at::Tensor blur(const at::Tensor& planes, const at::Tensor& taps) {
  const at::Tensor rows = torch::conv2d(planes, taps.view({1, 1, 1, -1}));
  return torch::conv2d(rows, taps.view({1, 1, -1, 1}));
}

}  // namespace

double ssim(const at::Tensor& a, const at::Tensor& b) {
  const bool shapes_ok = a.sizes().equals(b.sizes()) && (a.dim() == 3 || a.dim() == 4) &&
                         a.size(-1) == 3 && a.size(-2) > 2 * kRadius && a.size(-3) > 2 * kRadius;
  if (a.scalar_type() != at::kByte || b.scalar_type() != at::kByte || !shapes_ok) {
    throw ShapeError(describe(
        "ssim", "pictures", "two uint8 [N,] H, W, 3 tensors of one shape, sides of 11 or more",
        std::string(c10::toString(a.scalar_type())) + " " + c10::str(a.sizes()) + " and " +
            c10::toString(b.scalar_type()) + " " + c10::str(b.sizes())));
  }
  const auto planes = [](const at::Tensor& t) {
    const at::Tensor x = t.dim() == 3 ? t.unsqueeze(0) : t;
    return x.permute({0, 3, 1, 2}).to(torch::kDouble).reshape({-1, 1, x.size(1), x.size(2)});
  };
  const at::Tensor x = planes(a.cpu()), y = planes(b.cpu());
  at::Tensor taps = torch::arange(-kRadius, kRadius + 1, torch::kDouble);
  taps = (-taps.pow(2) / (2 * kSigma * kSigma)).exp();
  taps = taps / taps.sum();
  const at::Tensor mx = blur(x, taps), my = blur(y, taps);
  const at::Tensor vx = blur(x * x, taps) - mx * mx;
  const at::Tensor vy = blur(y * y, taps) - my * my;
  const at::Tensor cxy = blur(x * y, taps) - mx * my;
  const double c1 = std::pow(0.01 * 255, 2), c2 = std::pow(0.03 * 255, 2);
  const at::Tensor map =
      ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2));
  // Every plane has the same number of positions, so the plain mean is the mean of means.
  return map.mean().item<double>();
}

}  // namespace vilau::eval
