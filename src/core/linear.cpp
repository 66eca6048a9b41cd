#include "vilau/core/linear.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <c10/core/GradMode.h>

#include <string>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <vector>

#include "vilau/core/error.h"

namespace vilau {

namespace {

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

float sum_lanes(__m256 v) __attribute__((target("avx2,fma")));
float sum_lanes(__m256 v) {
  const __m128 half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 pairs = _mm_add_ps(half, _mm_movehl_ps(half, half));
  return _mm_cvtss_f32(_mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1)));
}

// y[o] = W[o] . x (+ b[o]) for outputs [begin, end): one pass over the weight rows, x
// staying in cache. Two accumulators keep the fused multiply-adds from waiting on each
// other. (A two-row variant was slower than BLAS inside a generation step; see
// docs/performance.md.)
__attribute__((target("avx2,fma"))) void row_kernel(const float* w, const float* x, const float* b,
                                                    float* y, int64_t in, int64_t begin,
                                                    int64_t end) {
  for (int64_t o = begin; o < end; ++o) {
    const float* wo = w + o * in;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= in; i += 16) {
      acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(wo + i), _mm256_loadu_ps(x + i), acc0);
      acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(wo + i + 8), _mm256_loadu_ps(x + i + 8), acc1);
    }
    float total = sum_lanes(_mm256_add_ps(acc0, acc1));
    for (; i < in; ++i) total += wo[i] * x[i];
    y[o] = b != nullptr ? total + b[o] : total;
  }
}

bool has_avx2_fma() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}

// The one-row fp32 product on x86 CPUs with AVX2, where BLAS's matrix-vector product
// reaches about half the memory bandwidth (docs/performance.md) and this about all of it.
bool applies(const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& x, int64_t rows) {
  return rows == 1 && has_avx2_fma() && x.scalar_type() == at::kFloat &&
         weight.scalar_type() == at::kFloat &&
         (!bias.defined() || (bias.scalar_type() == at::kFloat && bias.is_contiguous()));
}

// Recorded as an operator of its own, so that OpTrace still counts it.
at::Tensor row_product(const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& x,
                       at::IntArrayRef shape) {
  RECORD_FUNCTION("vilau::row_product", std::vector<c10::IValue>({x, weight}));
  at::Tensor y = at::empty(shape, x.options());
  const float* w = weight.const_data_ptr<float>();
  const float* xs = x.const_data_ptr<float>();
  const float* b = bias.defined() ? bias.const_data_ptr<float>() : nullptr;
  float* ys = y.mutable_data_ptr<float>();
  const int64_t in = weight.size(1);
  at::parallel_for(0, weight.size(0), 256,
                   [&](int64_t begin, int64_t end) { row_kernel(w, xs, b, ys, in, begin, end); });
  return y;
}
#else
bool applies(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t) { return false; }
at::Tensor row_product(const at::Tensor&, const at::Tensor&, const at::Tensor&, at::IntArrayRef) {
  return {};
}
#endif

}  // namespace

at::Tensor linear(const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& x) {
  const int64_t in = weight.size(1), out = weight.size(0);
  if (at::GradMode::is_enabled() || x.dim() < 1 || x.size(-1) != in || x.numel() == 0 ||
      !x.is_contiguous() || !weight.is_contiguous()) {
    return at::linear(x, weight, bias.defined() ? std::optional(bias) : std::nullopt);
  }
  const int64_t rows = x.numel() / in;
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = out;
  // Transposes and row views are written as one as_strided each: at::linear's t() and
  // view() dispatch three operators apiece, and a decode step is counted in operators.
  if (x.device().is_cpu() && weight.numel() >= kStreamedWeights && applies(weight, bias, x, rows)) {
    return row_product(weight, bias, x, shape);
  }
  if (x.device().is_cpu() && rows >= 2 && rows <= kStreamedRows &&
      weight.numel() >= kStreamedWeights) {
    // (W x^T)^T: x^T [in, rows] and the [out, rows] product read back as [..., out].
    const at::Tensor product = at::mm(weight, x.as_strided({in, rows}, {1, in}));
    std::vector<int64_t> strides(shape.size());
    strides.back() = rows;
    int64_t stride = 1;
    for (size_t i = shape.size() - 1; i-- > 0;) {
      strides[i] = stride;
      stride *= shape[i];
    }
    // Written out row-major, as the next operators (and SDPA's fused kernels) want it.
    at::Tensor y = at::empty(shape, x.options());
    const at::Tensor rows_view = product.as_strided(shape, strides);
    if (bias.defined()) {
      at::add_out(y, rows_view, bias);
    } else {
      y.copy_(rows_view);
    }
    return y;
  }
  // What at::linear computes for contiguous input: one matrix of rows and the bias. On the
  // CPU addmm itself copies the bias into the output before the product (the same values),
  // in two more dispatched operators than adding it after; on a GPU it is one kernel.
  const at::Tensor matrix = x.dim() == 2 ? x : x.view({rows, in});
  const at::Tensor transposed = weight.as_strided({in, out}, {1, in});
  at::Tensor y;
  if (!bias.defined()) {
    y = at::mm(matrix, transposed);
  } else if (x.device().is_cpu()) {
    y = at::mm(matrix, transposed).add_(bias);
  } else {
    y = at::addmm(bias, matrix, transposed);
  }
  return x.dim() == 2 ? y : y.view(shape);
}

at::Tensor linear(torch::nn::LinearImpl& layer, const at::Tensor& x) {
  return linear(layer.weight, layer.bias, x);
}

FusedLinear::FusedLinear(std::vector<torch::nn::LinearImpl*> layers) : layers_(std::move(layers)) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> weights, biases;
  for (torch::nn::LinearImpl* layer : layers_) {
    weights.push_back(layer->weight);
    if (layer->bias.defined()) biases.push_back(layer->bias);
  }
  if (!biases.empty() && biases.size() != layers_.size()) {
    throw ShapeError(
        describe("FusedLinear", "biases", "all layers or none",
                 std::to_string(biases.size()) + " of " + std::to_string(layers_.size())));
  }
  weight_ = at::cat(weights);
  if (!biases.empty()) bias_ = at::cat(biases);
  int64_t row = 0;
  for (torch::nn::LinearImpl* layer : layers_) {
    const int64_t out = layer->weight.size(0);
    layer->weight.set_data(weight_.narrow(0, row, out));
    if (bias_.defined()) layer->bias.set_data(bias_.narrow(0, row, out));
    row += out;
  }
}

bool FusedLinear::intact() const {
  if (layers_.empty()) return false;
  int64_t row = 0;
  for (torch::nn::LinearImpl* layer : layers_) {
    const auto& w = layer->weight;
    if (w.dim() != 2 || w.size(1) != weight_.size(1) || !w.is_contiguous() ||
        w.data_ptr() != static_cast<const char*>(weight_.data_ptr()) +
                            row * weight_.stride(0) * weight_.element_size()) {
      return false;
    }
    if (bias_.defined() && layer->bias.data_ptr() != static_cast<const char*>(bias_.data_ptr()) +
                                                         row * bias_.element_size()) {
      return false;
    }
    row += w.size(0);
  }
  return true;
}

at::Tensor layer_norm(torch::nn::LayerNormImpl& layer, const at::Tensor& x) {
  const auto& o = layer.options;
  if (at::GradMode::is_enabled() || !o.elementwise_affine()) return layer.forward(x);
  return std::get<0>(
      at::native_layer_norm(x, o.normalized_shape(), layer.weight, layer.bias, o.eps()));
}

at::Tensor split_heads(const at::Tensor& x, int64_t heads) {
  if (x.dim() == 2 || x.size(1) == 1) {
    return x.view({x.size(0), heads, 1, x.size(-1) / heads});
  }
  return x.view({x.size(0), x.size(1), heads, x.size(2) / heads}).transpose(1, 2);
}

at::Tensor fused_heads(const at::Tensor& fused, int64_t first, int64_t heads, int64_t d) {
  const int64_t n = fused.size(0), t = fused.dim() == 2 ? 1 : fused.size(1);
  const int64_t width = fused.size(-1);
  return fused.as_strided({n, heads, t, d}, {t * width, d, width, 1},
                          fused.storage_offset() + first * d);
}

at::Tensor merge_heads(const at::Tensor& x, bool rows) {
  const int64_t width = x.size(1) * x.size(3);
  if (x.size(2) == 1) {
    // One position whose heads lie side by side (as SDPA writes them): a view, one
    // operator where reshape dispatches two.
    const bool side_by_side = x.stride(3) == 1 && x.stride(1) == x.size(3);
    if (rows) return side_by_side ? x.view({x.size(0), width}) : x.reshape({x.size(0), width});
    return side_by_side ? x.view({x.size(0), 1, width}) : x.reshape({x.size(0), 1, width});
  }
  return x.transpose(1, 2).reshape({x.size(0), x.size(2), width});
}

at::Tensor window(const at::Tensor& x, int64_t dim, int64_t start, int64_t length) {
  if (dim < 0) dim += x.dim();
  if (dim < 0 || dim >= x.dim() || start < 0 || length < 0 || start + length > x.size(dim)) {
    throw ShapeError(describe(
        "window", "range of dimension " + std::to_string(dim), "within " + c10::str(x.sizes()),
        "[" + std::to_string(start) + ", " + std::to_string(start + length) + ")"));
  }
  std::vector<int64_t> sizes(x.sizes().begin(), x.sizes().end());
  sizes[dim] = length;
  return x.as_strided(sizes, x.strides(), x.storage_offset() + start * x.stride(dim));
}

}  // namespace vilau
