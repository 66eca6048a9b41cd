#include "vilau/llm/depth_transformer.h"

#include <torch/torch.h>

#include <cmath>
#include <string>

#include "vilau/core/error.h"
#include "vilau/core/linear.h"
#include "vilau/io/safetensors_header.h"

namespace vilau {

namespace {

namespace F = torch::nn::functional;

void check_last_dim(const at::Tensor& x, int64_t expected, const char* what) {
  if (x.dim() < 1 || x.size(-1) != expected) {
    throw ShapeError(describe("depth transformer", what, "[..., " + std::to_string(expected) + "]",
                              io::shape_text(x.sizes().vec())));
  }
}

}  // namespace

DepthSelfAttentionImpl::DepthSelfAttentionImpl(int64_t embed_dim, int64_t num_heads,
                                               double attn_dropout, double resid_dropout)
    : num_heads_(num_heads), attn_dropout_(attn_dropout), resid_dropout_(resid_dropout) {
  key = register_module("key", torch::nn::Linear(embed_dim, embed_dim));
  query = register_module("query", torch::nn::Linear(embed_dim, embed_dim));
  value = register_module("value", torch::nn::Linear(embed_dim, embed_dim));
  proj = register_module("proj", torch::nn::Linear(embed_dim, embed_dim));
}

void DepthSelfAttentionImpl::fuse_projections() {
  if (!qkv_.intact()) qkv_ = FusedLinear({query.get(), key.get(), value.get()});
}

at::Tensor DepthSelfAttentionImpl::forward(const at::Tensor& x, const at::Tensor& kv,
                                           int64_t cached) {
  const bool rows = x.dim() == 2;
  const int64_t length = rows ? 1 : x.size(1);
  const int64_t e = x.size(-1), n = x.size(0), head_dim = e / num_heads_;
  at::Tensor q, k, v, qkv;
  if (qkv_.in_use(is_training())) {
    qkv = qkv_.forward(x);  // [N, T, 3E]: query, key, value
    q = fused_heads(qkv, 0, num_heads_, head_dim);
    if (!kv.defined()) {  // else read from the cache
      k = fused_heads(qkv, num_heads_, num_heads_, head_dim);
      v = fused_heads(qkv, 2 * num_heads_, num_heads_, head_dim);
    }
  } else {
    q = split_heads(linear(*query, x), num_heads_);
    k = split_heads(linear(*key, x), num_heads_);
    v = split_heads(linear(*value, x), num_heads_);
  }
  if (kv.defined()) {
    const at::Tensor slot = window(kv, 3, cached, length);  // [2, N, heads, T, head_dim]
    if (qkv.defined()) {
      // Keys then values, side by side in the product: one copy for both.
      slot.copy_(qkv.as_strided({2, n, num_heads_, length, head_dim},
                                {e, length * 3 * e, head_dim, 3 * e, 1}, qkv.storage_offset() + e));
    } else {
      slot.select(0, 0).copy_(k);
      slot.select(0, 1).copy_(v);
    }
    const auto seen = [&](int64_t i) {
      return kv.as_strided({n, num_heads_, cached + length, head_dim}, kv.strides().slice(1),
                           kv.storage_offset() + i * kv.stride(0));
    };
    k = seen(0), v = seen(1);
  }
  // The official code scales the keys before the product; SDPA scales the product, which
  // differs by rounding only. A single new position sees every cached one: no mask.
  const double p = is_training() ? attn_dropout_ : 0.0;
  at::Tensor y;
  if (length == 1 || cached == 0) {
    y = at::scaled_dot_product_attention(q, k, v, std::nullopt, p, /*is_causal=*/length > 1);
  } else {
    // New position i sees the cached depths and the new ones up to itself.
    const at::Tensor visible =
        torch::ones({length, cached + length}, x.options().dtype(at::kBool)).tril(cached);
    y = at::scaled_dot_product_attention(q, k, v, visible, p);
  }
  y = linear(*proj, merge_heads(y, rows));
  return is_training() ? F::dropout(y, F::DropoutFuncOptions().p(resid_dropout_).training(true))
                       : y;
}

DepthBlockImpl::DepthBlockImpl(int64_t embed_dim, int64_t num_heads, double attn_dropout,
                               double resid_dropout) {
  ln1 = register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({embed_dim})));
  ln2 = register_module("ln2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({embed_dim})));
  attn = register_module("attn",
                         DepthSelfAttention(embed_dim, num_heads, attn_dropout, resid_dropout));
  mlp = register_module(
      "mlp", torch::nn::Sequential(torch::nn::Linear(embed_dim, 4 * embed_dim), torch::nn::GELU(),
                                   torch::nn::Linear(4 * embed_dim, embed_dim),
                                   torch::nn::Dropout(resid_dropout)));
}

at::Tensor DepthBlockImpl::forward(const at::Tensor& x, const at::Tensor& kv, int64_t cached) {
  const at::Tensor h = x + attn(layer_norm(*ln1, x), kv, cached);
  at::Tensor m = linear(mlp->at<torch::nn::LinearImpl>(0), layer_norm(*ln2, h));
  m = linear(mlp->at<torch::nn::LinearImpl>(2), mlp->at<torch::nn::GELUImpl>(1).forward(m));
  return h + (is_training() ? mlp->at<torch::nn::DropoutImpl>(3).forward(m) : m);
}

void DepthTransformerImpl::fuse_projections() {
  for (const auto& block : *head_transformer->blocks) {
    block->as<DepthBlockImpl>()->attn->fuse_projections();
  }
}

DepthStackImpl::DepthStackImpl(const DepthTransformerConfig& config) {
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.num_layers; ++i) {
    blocks->push_back(
        DepthBlock(config.embed_dim, config.num_heads, config.attn_dropout, config.resid_dropout));
  }
}

DepthTransformerImpl::DepthTransformerImpl(const DepthTransformerConfig& config, int64_t depth,
                                           int64_t codebook_size, int64_t code_dim,
                                           int64_t llm_hidden)
    : config_(config),
      depth_(depth),
      codebook_size_(codebook_size),
      code_dim_(code_dim),
      llm_hidden_(llm_hidden) {
  config_.validate("depth_transformer");
  if (depth < 1 || codebook_size < 1 || code_dim < 1 || llm_hidden < 1) {
    throw ShapeError(describe("depth transformer", "depth, codebook size, code dim, LLM hidden",
                              "positive sizes",
                              io::shape_text({depth, codebook_size, code_dim, llm_hidden})));
  }
  const int64_t e = config_.embed_dim;
  in_mlp_1 = register_module("in_mlp_1", torch::nn::Linear(code_dim, e));
  in_mlp_2 = register_module("in_mlp_2", torch::nn::Linear(llm_hidden, e));
  head_transformer = register_module("head_transformer", DepthStack(config_));
  // The official init draws the depth embedding from N(0, 0.02^2); the rest keeps the
  // framework defaults, as the official model does.
  pos_emb_d = register_parameter("pos_emb_d", torch::randn({1, depth, e}) * 0.02);
  classifier_mlp = register_module(
      "classifier_mlp",
      torch::nn::Sequential({{"layer_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({e}))},
                             {"linear", torch::nn::Linear(e, codebook_size)}}));
}

at::Tensor DepthTransformerImpl::classify(const at::Tensor& x) {
  return linear(classifier_mlp->at<torch::nn::LinearImpl>(1),
                layer_norm(classifier_mlp->at<torch::nn::LayerNormImpl>(0), x));
}

at::Tensor DepthTransformerImpl::forward(const at::Tensor& llm_hidden,
                                         const at::Tensor& code_prefix_sums) {
  check_last_dim(llm_hidden, llm_hidden_, "LLM hidden state");
  check_last_dim(code_prefix_sums, code_dim_, "code prefix sums");
  auto lead = llm_hidden.sizes().vec();
  lead.pop_back();
  auto expected = lead;
  expected.insert(expected.end(), {depth_ - 1, code_dim_});
  if (code_prefix_sums.sizes().vec() != expected) {
    throw ShapeError(describe("depth transformer", "code prefix sums", io::shape_text(expected),
                              io::shape_text(code_prefix_sums.sizes().vec())));
  }
  const at::Tensor h = linear(*in_mlp_2, llm_hidden.reshape({-1, 1, llm_hidden_}));
  const at::Tensor ctx = linear(*in_mlp_1, code_prefix_sums.reshape({-1, depth_ - 1, code_dim_}));
  at::Tensor x = at::cat({h, ctx}, 1) + pos_emb_d;
  const auto& blocks = *head_transformer->blocks;
  for (size_t i = 0; i < blocks.size(); ++i) {
    DepthBlockImpl& block = *blocks[i]->as<DepthBlockImpl>();
    const Block run = [&block](const at::Tensor& in) { return block.forward(in); };
    x = block_wrapper_ && is_training() ? block_wrapper_(static_cast<int64_t>(i), run, x) : run(x);
  }
  auto out_shape = lead;
  out_shape.insert(out_shape.end(), {depth_, codebook_size_});
  return classify(x).view(out_shape);
}

at::Tensor DepthTransformerImpl::step(const at::Tensor& x, DepthKvCache& cache) {
  const int64_t d = cache.depth_;
  if (d >= depth_) {
    throw ShapeError(describe("depth transformer", "depth to run",
                              "below " + std::to_string(depth_), std::to_string(d)));
  }
  const bool first = d == 0;
  const int64_t rows = first ? x.size(0) : cache.kv_.front().size(1);
  const int64_t width = first ? llm_hidden_ : code_dim_;
  if (x.dim() != 2 || x.size(0) != rows || x.size(1) != width) {
    throw ShapeError(describe("depth transformer",
                              first ? "LLM hidden state (depth 0)" : "code prefix sum",
                              io::shape_text({rows, width}), io::shape_text(x.sizes().vec())));
  }
  // One position a row, [N, E] through the blocks.
  at::Tensor h = linear(first ? *in_mlp_2 : *in_mlp_1, x) + pos_emb_d.select(1, d);
  const auto& blocks = *head_transformer->blocks;
  const int64_t heads = config_.num_heads, head_dim = config_.embed_dim / config_.num_heads;
  const bool fresh = cache.kv_.size() != blocks.size() || cache.kv_.front().size(1) != rows ||
                     cache.kv_.front().dtype() != h.dtype() ||
                     cache.kv_.front().device() != h.device();
  if (first && fresh) {
    cache.kv_.clear();
    for (size_t i = 0; i < blocks.size(); ++i) {
      cache.kv_.push_back(at::empty({2, rows, heads, depth_, head_dim}, h.options()));
    }
  }
  for (size_t i = 0; i < blocks.size(); ++i) {
    h = blocks[i]->as<DepthBlockImpl>()->forward(h, cache.kv_[i], d);
  }
  cache.depth_ = d + 1;
  return classify(h);
}

}  // namespace vilau
