#include "vilau/llm/depth_transformer.h"

#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <string>

#include "vilau/core/error.h"
#include "vilau/io/safetensors_header.h"

namespace vilau {

namespace {

namespace F = torch::nn::functional;

// [N, T, E] -> [N, heads, T, E / heads]
at::Tensor split_heads(const at::Tensor& x, int64_t heads) {
  return x.view({x.size(0), x.size(1), heads, x.size(2) / heads}).transpose(1, 2);
}

at::Tensor merge_heads(const at::Tensor& x) {
  return x.transpose(1, 2).reshape({x.size(0), x.size(2), x.size(1) * x.size(3)});
}

void check_last_dim(const at::Tensor& x, int64_t expected, const char* what) {
  if (x.dim() < 1 || x.size(-1) != expected) {
    throw ShapeError(describe("depth transformer", what, "[..., " + std::to_string(expected) + "]",
                              io::shape_text(x.sizes().vec())));
  }
}

}  // namespace

void DepthKvCache::clear() {
  keys_.clear();
  values_.clear();
  depth_ = 0;
}

DepthSelfAttentionImpl::DepthSelfAttentionImpl(int64_t embed_dim, int64_t num_heads,
                                               double attn_dropout, double resid_dropout)
    : num_heads_(num_heads), attn_dropout_(attn_dropout), resid_dropout_(resid_dropout) {
  key = register_module("key", torch::nn::Linear(embed_dim, embed_dim));
  query = register_module("query", torch::nn::Linear(embed_dim, embed_dim));
  value = register_module("value", torch::nn::Linear(embed_dim, embed_dim));
  proj = register_module("proj", torch::nn::Linear(embed_dim, embed_dim));
}

at::Tensor DepthSelfAttentionImpl::forward(const at::Tensor& x, const at::Tensor& past_key,
                                           const at::Tensor& past_value, at::Tensor* key_out,
                                           at::Tensor* value_out) {
  const at::Tensor q = split_heads(query(x), num_heads_);
  at::Tensor k = split_heads(key(x), num_heads_);
  at::Tensor v = split_heads(value(x), num_heads_);
  const int64_t past = past_key.defined() ? past_key.size(2) : 0;
  if (past > 0) {
    k = at::cat({past_key, k}, 2);
    v = at::cat({past_value, v}, 2);
  }
  // The official order: the keys are scaled before the product.
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  at::Tensor logits = at::matmul(q, k.transpose(-2, -1) * scale);
  const int64_t length = x.size(1);
  if (length > 1) {
    // New position i sees the cached depths and the new ones up to itself.
    const at::Tensor visible =
        torch::ones({length, past + length}, x.options().dtype(at::kBool)).tril(past);
    logits = logits.masked_fill(visible.logical_not(), -std::numeric_limits<double>::infinity());
  }
  at::Tensor probs = at::softmax(logits, -1);
  probs = F::dropout(probs, F::DropoutFuncOptions().p(attn_dropout_).training(is_training()));
  if (key_out != nullptr) {
    *key_out = k;
    *value_out = v;
  }
  const at::Tensor y = proj(merge_heads(at::matmul(probs, v)));
  return F::dropout(y, F::DropoutFuncOptions().p(resid_dropout_).training(is_training()));
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

at::Tensor DepthBlockImpl::forward(const at::Tensor& x, const at::Tensor& past_key,
                                   const at::Tensor& past_value, at::Tensor* key,
                                   at::Tensor* value) {
  const at::Tensor h = x + attn(ln1(x), past_key, past_value, key, value);
  return h + mlp->forward(ln2(h));
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
  const at::Tensor h = in_mlp_2(llm_hidden.reshape({-1, 1, llm_hidden_}));
  const at::Tensor ctx = in_mlp_1(code_prefix_sums.reshape({-1, depth_ - 1, code_dim_}));
  at::Tensor x = at::cat({h, ctx}, 1) + pos_emb_d;
  const auto& blocks = *head_transformer->blocks;
  for (size_t i = 0; i < blocks.size(); ++i) {
    DepthBlockImpl& block = *blocks[i]->as<DepthBlockImpl>();
    const Block run = [&block](const at::Tensor& in) {
      return block.forward(in, {}, {}, nullptr, nullptr);
    };
    x = block_wrapper_ && is_training() ? block_wrapper_(static_cast<int64_t>(i), run, x) : run(x);
  }
  auto out_shape = lead;
  out_shape.insert(out_shape.end(), {depth_, codebook_size_});
  return classifier_mlp->forward(x).view(out_shape);
}

at::Tensor DepthTransformerImpl::step(const at::Tensor& x, DepthKvCache& cache) {
  const int64_t d = cache.depth_;
  if (d >= depth_) {
    throw ShapeError(describe("depth transformer", "depth to run",
                              "below " + std::to_string(depth_), std::to_string(d)));
  }
  const bool first = d == 0;
  const int64_t rows = first ? x.size(0) : cache.keys_.front().size(0);
  const int64_t width = first ? llm_hidden_ : code_dim_;
  if (x.dim() != 2 || x.size(0) != rows || x.size(1) != width) {
    throw ShapeError(describe("depth transformer",
                              first ? "LLM hidden state (depth 0)" : "code prefix sum",
                              io::shape_text({rows, width}), io::shape_text(x.sizes().vec())));
  }
  at::Tensor h = (first ? in_mlp_2(x) : in_mlp_1(x)).unsqueeze(1) + pos_emb_d.slice(1, d, d + 1);
  const auto& blocks = *head_transformer->blocks;
  cache.keys_.resize(blocks.size());
  cache.values_.resize(blocks.size());
  for (size_t i = 0; i < blocks.size(); ++i) {
    h = blocks[i]->as<DepthBlockImpl>()->forward(h, cache.keys_[i], cache.values_[i],
                                                 &cache.keys_[i], &cache.values_[i]);
  }
  cache.depth_ = d + 1;
  return classifier_mlp->forward(h.squeeze(1));
}

}  // namespace vilau
