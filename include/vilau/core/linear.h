#pragma once
// The product of a torch::nn::Linear as decode steps need it. A step multiplies a few rows
// (one token or image position per row, two with CFG) by large weights, so it is bound by
// reading them. On the CPU, BLAS computes x W^T for two or more rows through a path that
// repacks W at every call, about twice as slow as streaming it, which (W x^T)^T does; the
// values are the same up to rounding (docs/performance.md has the measurement).
#include <ATen/core/Tensor.h>
#include <torch/nn/modules/linear.h>

namespace vilau {

// layer(x). Without autograd: through (W x^T)^T for 2 to kStreamedRows rows on the CPU when
// W has at least kStreamedWeights elements, otherwise with the rows as one matrix.
at::Tensor linear(torch::nn::LinearImpl& layer, const at::Tensor& x);

constexpr int64_t kStreamedRows = 16;
constexpr int64_t kStreamedWeights = 1 << 20;

}  // namespace vilau
