#include "vilau/llm/llama.h"

#include <torch/torch.h>

#include <cmath>
#include <string>
#include <tuple>

#include "vilau/core/error.h"
#include "vilau/core/linear.h"
#include "vilau/core/recompute.h"

namespace vilau {

namespace {

torch::nn::Linear linear(int64_t in, int64_t out) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
}

// HF's x * cos + rotate_half(x) * sin, where rotate_half(x) = cat(-x2, x1) over the two
// halves of the head dimension. With sin's first half negated in advance, rotate_half(x) *
// sin is swap(x) * sin, and bit for bit the same, since (-a) * b == a * (-b) exactly. The
// halves swap as a flip of x viewed [..., 2, half]: one kernel, where roll is a cat of
// two slices.
at::Tensor apply_rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& signed_sin) {
  std::vector<int64_t> halves(x.sizes().begin(), x.sizes().end());
  halves.back() = x.size(-1) / 2;
  halves.insert(halves.end() - 1, 2);
  // Splitting the last dimension, which is contiguous, is always a view.
  const at::Tensor swapped = x.view(halves).flip(-2).view(x.sizes());
  return x * cos + swapped * signed_sin;
}

// cos and signed sin (see apply_rotary) [B, 1, T, head_dim] for position_ids [B, T]. Linear
// scaling divides the positions, as HF's LlamaLinearScalingRotaryEmbedding does before the
// product.
std::pair<at::Tensor, at::Tensor> rotary(const LlmConfig& config, const at::Tensor& position_ids,
                                         at::ScalarType dtype) {
  const int64_t dim = config.hidden_size / config.num_heads;
  const auto opts = at::TensorOptions().dtype(at::kFloat).device(position_ids.device());
  const at::Tensor inv_freq =
      at::pow(config.rope_theta, at::arange(0, dim, 2, opts.dtype(at::kLong)).to(at::kFloat) / dim)
          .reciprocal();
  at::Tensor t = position_ids.to(opts);
  if (config.rope_scaling_factor != 1.0) {
    t = t / config.rope_scaling_factor;
  }
  const at::Tensor freqs = t.unsqueeze(-1) * inv_freq;
  const at::Tensor cos = freqs.cos().to(dtype), sin = freqs.sin().to(dtype);
  return {at::cat({cos, cos}, -1).unsqueeze(1), at::cat({-sin, sin}, -1).unsqueeze(1)};
}

// Boolean [B, 1, T, S] mask: causal over S = past + T keys, left pads excluded. Each position
// may always see itself so that pad rows never softmax over nothing, which would make them
// NaN and poison the gradients through the masked products.
// The mask holds 0 for padding and a segment id (1, 2, ...) per token: a query sees the
// earlier keys of its own segment, so packed samples never attend to each other. A plain
// 0/1 mask is the one-segment case. Every query sees itself, so padded rows stay finite.
at::Tensor attention_allowed(const at::Tensor& attention_mask, int64_t past, int64_t steps) {
  const int64_t total = past + steps;
  const auto opts = at::TensorOptions().dtype(at::kLong).device(attention_mask.device());
  const at::Tensor query = at::arange(past, total, opts).unsqueeze(1);
  const at::Tensor key = at::arange(0, total, opts).unsqueeze(0);
  const at::Tensor causal = key.le(query);
  const int64_t rows = attention_mask.size(0);
  const at::Tensor segments = attention_mask.to(at::kLong);
  const at::Tensor key_segment = segments.reshape({rows, 1, 1, total});
  const at::Tensor query_segment = segments.slice(1, past).reshape({rows, 1, steps, 1});
  return (causal & key_segment.ne(0) & key_segment.eq(query_segment)) | key.eq(query);
}

// [B, kv_heads, S, D] -> [B, kv_heads * groups, S, D], each kv head serving `groups` queries.
at::Tensor repeat_kv(const at::Tensor& x, int64_t groups) {
  if (groups == 1) {
    return x;
  }
  const auto s = x.sizes();
  return x.unsqueeze(2)
      .expand({s[0], s[1], groups, s[2], s[3]})
      .reshape({s[0], s[1] * groups, s[2], s[3]});
}

}  // namespace

KvCache::KvCache(const LlmConfig& config, int64_t batch, int64_t max_length, at::ScalarType dtype,
                 at::Device device)
    : max_length_(max_length) {
  const int64_t head_dim = config.hidden_size / config.num_heads;
  const auto opts = at::TensorOptions().dtype(dtype).device(device);
  for (int64_t i = 0; i < config.num_layers; ++i) {
    keys_.push_back(at::zeros({batch, config.num_kv_heads, max_length, head_dim}, opts));
    values_.push_back(at::zeros({batch, config.num_kv_heads, max_length, head_dim}, opts));
  }
  const auto longs = opts.dtype(at::kLong);
  visible_ = at::zeros({batch, 1, 1, max_length}, opts.dtype(at::kBool));
  next_position_ = at::zeros({batch}, longs);
  slot_ = at::zeros({1}, longs);
  // Every position a row can reach is below max_length: a row's position id never exceeds
  // its slot. The tables hold the same values rotary() computes, element by element.
  const auto [cos, sin] = vilau::rotary(config, at::arange(max_length, longs).unsqueeze(0), dtype);
  cos_ = cos.view({max_length, head_dim});
  sin_ = sin.view({max_length, head_dim});
}

void KvCache::check_room(int64_t steps) const {
  if (length_ + steps > max_length_) {
    throw ShapeError(describe("KV cache", "cached positions",
                              "at most " + std::to_string(max_length_),
                              std::to_string(length_ + steps)));
  }
}

std::pair<at::Tensor, at::Tensor> KvCache::append(int64_t layer, const at::Tensor& k,
                                                  const at::Tensor& v) {
  const int64_t end = length_ + k.size(2);
  check_room(k.size(2));
  auto& keys = keys_.at(layer);
  auto& values = values_.at(layer);
  window(keys, 2, length_, k.size(2)).copy_(k);
  window(values, 2, length_, k.size(2)).copy_(v);
  return {window(keys, 2, 0, end), window(values, 2, 0, end)};
}

void KvCache::advance(int64_t steps, const at::Tensor& attention_mask,
                      const at::Tensor& position_ids) {
  length_ += steps;
  visible_.narrow(3, 0, length_).copy_(attention_mask.ne(0).view({batch(), 1, 1, length_}));
  next_position_.copy_(position_ids.select(1, -1) + 1);
  slot_.fill_(length_);
}

std::pair<at::Tensor, at::Tensor> KvCache::rotary(const at::Tensor& position_ids) const {
  const auto rows = [&](const at::Tensor& table) {
    return table.index_select(0, position_ids.reshape(-1))
        .view({position_ids.size(0), 1, position_ids.size(1), table.size(1)});
  };
  return {rows(cos_), rows(sin_)};
}

std::pair<at::Tensor, at::Tensor> KvCache::begin_step() {
  check_room(1);
  visible_.index_fill_(3, slot_, true);
  decoding_ = true;
  return rotary(next_position_.unsqueeze(1));
}

std::pair<at::Tensor, at::Tensor> KvCache::write(int64_t layer, const at::Tensor& k,
                                                 const at::Tensor& v) {
  auto& keys = keys_.at(layer);
  auto& values = values_.at(layer);
  keys.index_copy_(2, slot_, k);
  values.index_copy_(2, slot_, v);
  return {keys, values};
}

void KvCache::count_replayed_step() {
  check_room(1);
  ++length_;
}

void KvCache::end_step() {
  slot_.add_(1);
  next_position_.add_(1);
  ++length_;
  decoding_ = false;
}

at::Tensor position_ids_from_mask(const at::Tensor& attention_mask) {
  const at::Tensor mask = attention_mask.ne(0).to(at::kLong);
  return (mask.cumsum(-1) - 1).masked_fill(mask.eq(0), 1);
}

LlamaRmsNormImpl::LlamaRmsNormImpl(int64_t hidden_size, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::ones({hidden_size}));
}

at::Tensor LlamaRmsNormImpl::forward(const at::Tensor& x) {
  // Casts only where the dtype changes: each is one operator more per norm and step.
  const bool fp32 = x.scalar_type() == at::kFloat;
  const at::Tensor h = fp32 ? x : x.to(at::kFloat);
  // mean() is sum() then div_() (one operator in ATen, nine dispatched), and pow(2) is
  // h * h; written out, the values are the same bit for bit.
  if (!width_.defined() || width_.device() != h.device()) {
    const auto opts = h.options().dtype(at::kFloat);
    width_ = at::scalar_tensor(static_cast<double>(weight.size(0)), opts);
    eps_tensor_ = at::scalar_tensor(eps_, opts);
  }
  const at::Tensor variance = (h * h).sum(-1, true).div_(width_);
  const at::Tensor normed = h * variance.add_(eps_tensor_).rsqrt_();
  return weight * (fp32 ? normed : normed.to(x.scalar_type()));
}

LlamaAttentionImpl::LlamaAttentionImpl(const LlmConfig& config)
    : num_heads_(config.num_heads),
      num_kv_heads_(config.num_kv_heads),
      head_dim_(config.hidden_size / config.num_heads) {
  const int64_t h = config.hidden_size;
  q_proj = register_module("q_proj", linear(h, num_heads_ * head_dim_));
  k_proj = register_module("k_proj", linear(h, num_kv_heads_ * head_dim_));
  v_proj = register_module("v_proj", linear(h, num_kv_heads_ * head_dim_));
  o_proj = register_module("o_proj", linear(num_heads_ * head_dim_, h));
}

void LlamaAttentionImpl::fuse_projections() {
  if (!qkv_.intact()) qkv_ = FusedLinear({q_proj.get(), k_proj.get(), v_proj.get()});
}

at::Tensor LlamaAttentionImpl::forward(const at::Tensor& x, const at::Tensor& cos,
                                       const at::Tensor& sin, const at::Tensor& allowed,
                                       KvCache* cache, int64_t layer) {
  // x [B, T, H], or [B, H] for one position a row (a decode step).
  const bool rows = x.dim() == 2;
  at::Tensor q, k, v;
  if (qkv_.in_use(is_training())) {
    // [B, T, (n + 2 kv) d] read as the three head layouts.
    const at::Tensor qkv = qkv_.forward(x);
    q = fused_heads(qkv, 0, num_heads_, head_dim_);
    k = fused_heads(qkv, num_heads_, num_kv_heads_, head_dim_);
    v = fused_heads(qkv, num_heads_ + num_kv_heads_, num_kv_heads_, head_dim_);
  } else {
    q = split_heads(linear(*q_proj, x), num_heads_);
    k = split_heads(linear(*k_proj, x), num_kv_heads_);
    v = split_heads(linear(*v_proj, x), num_kv_heads_);
  }
  q = apply_rotary(q, cos, sin);
  k = apply_rotary(k, cos, sin);
  const bool decoding = cache != nullptr && cache->decoding();
  if (decoding) {
    std::tie(k, v) = cache->write(layer, k, v);
  } else if (cache != nullptr) {
    std::tie(k, v) = cache->append(layer, k, v);
  }
  const int64_t groups = num_heads_ / num_kv_heads_;
  const at::Tensor mask = decoding ? cache->visible() : allowed;
  const at::Tensor out = at::scaled_dot_product_attention(
      q, repeat_kv(k, groups), repeat_kv(v, groups),
      mask.defined() ? std::optional(mask) : std::nullopt, 0.0, /*is_causal=*/!mask.defined());
  return linear(*o_proj, merge_heads(out, rows));
}

LlamaMlpImpl::LlamaMlpImpl(int64_t hidden_size, int64_t intermediate_size) {
  gate_proj = register_module("gate_proj", linear(hidden_size, intermediate_size));
  up_proj = register_module("up_proj", linear(hidden_size, intermediate_size));
  down_proj = register_module("down_proj", linear(intermediate_size, hidden_size));
}

void LlamaMlpImpl::fuse_projections() {
  if (!gate_up_.intact()) gate_up_ = FusedLinear({gate_proj.get(), up_proj.get()});
}

at::Tensor LlamaMlpImpl::forward(const at::Tensor& x) {
  if (gate_up_.in_use(is_training())) {
    const at::Tensor gate_up = gate_up_.forward(x);
    const int64_t width = gate_up.size(-1) / 2;
    return linear(*down_proj,
                  at::silu(window(gate_up, -1, 0, width)) * window(gate_up, -1, width, width));
  }
  return linear(*down_proj, at::silu(linear(*gate_proj, x)) * linear(*up_proj, x));
}

LlamaDecoderLayerImpl::LlamaDecoderLayerImpl(const LlmConfig& config) {
  self_attn = register_module("self_attn", LlamaAttention(config));
  mlp = register_module("mlp", LlamaMlp(config.hidden_size, config.intermediate_size));
  input_layernorm =
      register_module("input_layernorm", LlamaRmsNorm(config.hidden_size, config.rms_norm_eps));
  post_attention_layernorm = register_module("post_attention_layernorm",
                                             LlamaRmsNorm(config.hidden_size, config.rms_norm_eps));
}

at::Tensor LlamaDecoderLayerImpl::forward(const at::Tensor& x, const at::Tensor& cos,
                                          const at::Tensor& sin, const at::Tensor& allowed,
                                          KvCache* cache, int64_t layer) {
  const at::Tensor h = x + self_attn(input_layernorm(x), cos, sin, allowed, cache, layer);
  return h + mlp(post_attention_layernorm(h));
}

LlamaModelImpl::LlamaModelImpl(const LlmConfig& config) {
  embed_tokens =
      register_module("embed_tokens", torch::nn::Embedding(config.vocab_size, config.hidden_size));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.num_layers; ++i) {
    layers->push_back(LlamaDecoderLayer(config));
  }
  norm = register_module("norm", LlamaRmsNorm(config.hidden_size, config.rms_norm_eps));
}

LlamaForCausalLMImpl::LlamaForCausalLMImpl(const LlmConfig& config) : config_(config) {
  config_.validate("llm");
  model = register_module("model", LlamaModel(config_));
  if (!config_.tie_word_embeddings) {
    lm_head = register_module("lm_head", linear(config_.hidden_size, config_.vocab_size));
  }
}

at::Tensor LlamaForCausalLMImpl::embed(const at::Tensor& input_ids) {
  return model->embed_tokens(input_ids);
}

at::Tensor LlamaForCausalLMImpl::hidden_states(const at::Tensor& inputs_embeds,
                                               const at::Tensor& position_ids,
                                               const at::Tensor& attention_mask, KvCache* cache,
                                               bool causal) {
  const int64_t steps = inputs_embeds.size(1);
  const int64_t past = cache != nullptr ? cache->length() : 0;
  if (attention_mask.dim() != 2 || attention_mask.size(0) != inputs_embeds.size(0) ||
      attention_mask.size(1) != past + steps) {
    throw ShapeError(describe(
        "LLaMA", "attention mask shape",
        "[" + std::to_string(inputs_embeds.size(0)) + ", " + std::to_string(past + steps) + "]",
        c10::str(attention_mask.sizes())));
  }
  if (cache != nullptr) cache->check_room(steps);
  const auto [cos, sin] = cache != nullptr
                              ? cache->rotary(position_ids)
                              : rotary(config_, position_ids, inputs_embeds.scalar_type());
  // Without earlier positions a causal mask is SDPA's own (is_causal); otherwise the mask
  // is materialised for padding, packed samples or the cached prefix.
  const at::Tensor allowed =
      causal && past == 0 ? at::Tensor() : attention_allowed(attention_mask, past, steps);
  // Recomputing needs no cache (a cached layer would append twice) and a differentiable
  // input; inference and frozen-embedding first layers run plainly.
  const bool recompute =
      activation_checkpointing_ && cache == nullptr && is_training() && at::GradMode::is_enabled();
  at::Tensor h = inputs_embeds;
  for (size_t i = 0; i < model->layers->size(); ++i) {
    LlamaDecoderLayerImpl& layer = model->layers->at<LlamaDecoderLayerImpl>(i);
    const auto index = static_cast<int64_t>(i);
    if (block_wrapper_ && cache == nullptr && is_training()) {
      h = block_wrapper_(
          index,
          [&layer, cos, sin, allowed, index](const at::Tensor& x) {
            return layer.forward(x, cos, sin, allowed, nullptr, index);
          },
          h);
    } else if (recompute && h.requires_grad()) {
      h = recompute_in_backward(
          [&layer, cos, sin, allowed, index](const at::Tensor& x) {
            return layer.forward(x, cos, sin, allowed, nullptr, index);
          },
          h);
    } else {
      h = layer.forward(h, cos, sin, allowed, cache, index);
    }
  }
  if (cache != nullptr) {
    cache->advance(steps, attention_mask, position_ids);
  }
  return model->norm(h);
}

at::Tensor LlamaForCausalLMImpl::decode(const at::Tensor& inputs_embeds, KvCache& cache) {
  const bool rows = inputs_embeds.dim() == 2;
  if ((!rows && (inputs_embeds.dim() != 3 || inputs_embeds.size(1) != 1)) ||
      inputs_embeds.size(0) != cache.batch() || inputs_embeds.size(-1) != config_.hidden_size) {
    const std::string b = std::to_string(cache.batch()), h = std::to_string(config_.hidden_size);
    throw ShapeError(describe("LLaMA decode", "inputs_embeds",
                              "[" + b + ", 1, " + h + "] or [" + b + ", " + h + "]",
                              c10::str(inputs_embeds.sizes())));
  }
  const auto [cos, sin] = cache.begin_step();
  // One position a row: [B, H] through the layers, without a view around every product.
  at::Tensor h = rows                            ? inputs_embeds
                 : inputs_embeds.is_contiguous() ? inputs_embeds.view({cache.batch(), -1})
                                                 : inputs_embeds.reshape({cache.batch(), -1});
  for (size_t i = 0; i < model->layers->size(); ++i) {
    h = model->layers->at<LlamaDecoderLayerImpl>(i).forward(h, cos, sin, {}, &cache,
                                                            static_cast<int64_t>(i));
  }
  cache.end_step();
  h = model->norm(h);
  return rows ? h : h.unsqueeze(1);
}

void LlamaForCausalLMImpl::fuse_projections() {
  for (size_t i = 0; i < model->layers->size(); ++i) {
    auto& layer = model->layers->at<LlamaDecoderLayerImpl>(i);
    layer.self_attn->fuse_projections();
    layer.mlp->fuse_projections();
  }
}

at::Tensor LlamaForCausalLMImpl::logits(const at::Tensor& hidden) {
  return lm_head ? linear(*lm_head, hidden) : at::linear(hidden, model->embed_tokens->weight);
}

at::Tensor LlamaForCausalLMImpl::forward(const at::Tensor& input_ids,
                                         const at::Tensor& attention_mask) {
  const bool causal = attention_mask.eq(1).all().item<bool>();
  return logits(hidden_states(embed(input_ids), position_ids_from_mask(attention_mask),
                              attention_mask, nullptr, causal));
}

}  // namespace vilau
