#pragma once
// Linear products as decode steps need them, and the views they take. A step multiplies a
// few rows (one token or image position per row, two with CFG) by large weights, so it is
// bound by reading them. On the CPU, BLAS computes x W^T for two or more rows through a
// path that repacks W at every call, about twice as slow as streaming it, which (W x^T)^T
// does; the values are the same up to rounding (docs/performance.md has the measurement).
#include <ATen/core/Tensor.h>
#include <c10/core/GradMode.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <vector>

namespace vilau {

// x W^T + b. Without autograd, for contiguous x: through (W x^T)^T for 2 to kStreamedRows
// rows on the CPU when W has at least kStreamedWeights elements, otherwise as at::linear
// computes it (the same products), in fewer dispatched operators.
at::Tensor linear(const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& x);
at::Tensor linear(torch::nn::LinearImpl& layer, const at::Tensor& x);

constexpr int64_t kStreamedRows = 16;
constexpr int64_t kStreamedWeights = 1 << 20;

// Several projections of one input as one product. The layers' weights (and biases)
// become consecutive rows of one tensor they share, so the state dict, loading in place
// and training still see the separate parameters. Replacing a parameter's storage
// (module.to(), set_data, a sharded layout) ends the sharing: intact() is then false and
// callers go back to the layers one by one.
class FusedLinear {
 public:
  FusedLinear() = default;
  explicit FusedLinear(std::vector<torch::nn::LinearImpl*> layers);

  bool intact() const;
  // The fused product serves a module's forward: inference (no autograd, not training) on
  // intact shared weights.
  bool in_use(bool training) const { return !training && !at::GradMode::is_enabled() && intact(); }
  // [..., sum of the layers' outputs], in the order given.
  at::Tensor forward(const at::Tensor& x) const { return linear(weight_, bias_, x); }

 private:
  std::vector<torch::nn::LinearImpl*> layers_;
  at::Tensor weight_, bias_;
};

// layer(x), without autograd in one operator fewer (native_layer_norm, which layer_norm
// calls).
at::Tensor layer_norm(torch::nn::LayerNormImpl& layer, const at::Tensor& x);

// Attention heads: [N, T, heads * d] (or [N, heads * d], one position a row) ->
// [N, heads, T, d]; for one position a view of the same memory.
at::Tensor split_heads(const at::Tensor& x, int64_t heads);
// Of a fused product [N, T, W] (or [N, W]), the `heads` heads of width d from head
// `first` on, as [N, heads, T, d]: one as_strided, no copy.
at::Tensor fused_heads(const at::Tensor& fused, int64_t first, int64_t heads, int64_t d);
// The inverse of split_heads, to [N, T, heads * d], or [N, heads * d] when `rows`. One position
// whose heads lie side by side (as SDPA writes them) merges as a view.
at::Tensor merge_heads(const at::Tensor& x, bool rows);

// x.narrow(dim, start, length) as one dispatched operator (narrow is three: narrow, slice,
// as_strided), for the cache windows a decode step takes at every layer.
at::Tensor window(const at::Tensor& x, int64_t dim, int64_t start, int64_t length);

}  // namespace vilau
