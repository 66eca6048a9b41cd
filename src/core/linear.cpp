#include "vilau/core/linear.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

namespace vilau {

at::Tensor linear(torch::nn::LinearImpl& layer, const at::Tensor& x) {
  const at::Tensor& weight = layer.weight;
  const int64_t in = weight.size(1);
  const int64_t rows = x.size(-1) == in && x.dim() > 0 ? x.numel() / in : 0;
  if (at::GradMode::is_enabled() || rows == 0) return layer.forward(x);
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = weight.size(0);
  // Small weights are not bound by reading them: the repacking costs nothing there. Rows
  // go in as a matrix, so that the bias is added inside the product (addmm) rather than by
  // a second kernel, as at::linear does for inputs of more than two dimensions.
  if (!x.device().is_cpu() || rows < 2 || rows > kStreamedRows ||
      weight.numel() < kStreamedWeights) {
    return x.dim() == 2 ? layer.forward(x) : layer.forward(x.reshape({rows, in})).view(shape);
  }
  // [out, rows] transposed: a strided view that the following operators read as it is.
  const at::Tensor y = at::mm(weight, x.reshape({rows, in}).t()).t().view(shape);
  return layer.bias.defined() ? y + layer.bias : y;
}

}  // namespace vilau
