#pragma once
// Full-reference picture metrics for the tower's reconstructions.
#include <ATen/core/Tensor.h>

namespace vilau::eval {

// Mean SSIM of RGB uint8 pictures [H, W, 3] or [N, H, W, 3] on the 0..255 scale, as
// scikit-image's structural_similarity(gaussian_weights=True, sigma=1.5,
// use_sample_covariance=False, data_range=255, channel_axis=-1) computes it, the setting
// most papers report: an 11-tap Gaussian window, K1 = 0.01, K2 = 0.03, per channel, averaged
// over the positions whose window fits inside the picture, then over channels and pictures.
// ShapeError for mismatched shapes, other dtypes, or sides below 11 pixels.
double ssim(const at::Tensor& a, const at::Tensor& b);

}  // namespace vilau::eval
