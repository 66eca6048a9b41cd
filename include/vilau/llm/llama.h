#pragma once
// The LLaMA backbone (SPEC §3.1) with HF's parameter names (SPEC §5.3), so an `llm/`
// checkpoint loads by name with load_module. The model is stateless across calls: the KV
// cache, batching and sampling live outside it, and a cache is passed in by reference.
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "vilau/core/recompute.h"
#include "vilau/llm/config.h"

namespace vilau {

// Preallocated keys and values for every layer, [B, kv_heads, max_length, head_dim] each.
// A forward pass appends its T new positions to every layer, then advances length() once.
class KvCache {
 public:
  KvCache(const LlmConfig& config, int64_t batch, int64_t max_length, at::ScalarType dtype,
          at::Device device);

  int64_t length() const { return length_; }
  int64_t max_length() const { return max_length_; }
  // Writes k, v [B, kv_heads, T, head_dim] after the current length of `layer` and returns
  // views of everything cached for it so far, length() + T positions.
  std::pair<at::Tensor, at::Tensor> append(int64_t layer, const at::Tensor& k, const at::Tensor& v);
  // Commits the positions the layers just appended.
  void advance(int64_t steps);
  void clear() { length_ = 0; }

 private:
  std::vector<at::Tensor> keys_, values_;
  int64_t max_length_;
  int64_t length_ = 0;
};

// HF's positions for a left-padded batch: cumsum(mask) - 1, with pads set to 1.
at::Tensor position_ids_from_mask(const at::Tensor& attention_mask);

// y = w * x / rms(x), the statistics in fp32 as HF LlamaRMSNorm computes them.
class LlamaRmsNormImpl : public torch::nn::Module {
 public:
  LlamaRmsNormImpl(int64_t hidden_size, double eps);
  at::Tensor forward(const at::Tensor& x);

  at::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(LlamaRmsNorm);

// Multi-head attention with grouped key/value heads and rotary positions.
class LlamaAttentionImpl : public torch::nn::Module {
 public:
  explicit LlamaAttentionImpl(const LlmConfig& config);
  // `allowed` is a boolean [B, 1, T, S] mask over the S = past + T key positions.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                     const at::Tensor& allowed, KvCache* cache, int64_t layer);

  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  int64_t num_heads_, num_kv_heads_, head_dim_;
};
TORCH_MODULE(LlamaAttention);

// SwiGLU: down(silu(gate x) * up x).
class LlamaMlpImpl : public torch::nn::Module {
 public:
  LlamaMlpImpl(int64_t hidden_size, int64_t intermediate_size);
  at::Tensor forward(const at::Tensor& x);

  torch::nn::Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(LlamaMlp);

class LlamaDecoderLayerImpl : public torch::nn::Module {
 public:
  explicit LlamaDecoderLayerImpl(const LlmConfig& config);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                     const at::Tensor& allowed, KvCache* cache, int64_t layer);

  LlamaAttention self_attn{nullptr};
  LlamaMlp mlp{nullptr};
  LlamaRmsNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
};
TORCH_MODULE(LlamaDecoderLayer);

// HF LlamaModel: the parameters under `model.`.
class LlamaModelImpl : public torch::nn::Module {
 public:
  explicit LlamaModelImpl(const LlmConfig& config);

  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  LlamaRmsNorm norm{nullptr};
};
TORCH_MODULE(LlamaModel);

class LlamaForCausalLMImpl : public torch::nn::Module {
 public:
  explicit LlamaForCausalLMImpl(const LlmConfig& config);

  // [B, T] token ids -> [B, T, H] embeddings.
  at::Tensor embed(const at::Tensor& input_ids);
  // inputs_embeds [B, T, H] and position_ids [B, T] -> [B, T, H] after the final norm.
  // attention_mask is 1 for tokens and 0 for padding, or 1, 2, ... per sample of a packed
  // row (attention stays within a sample); with a cache it covers the cached positions
  // too, [B, cache->length() + T], so that earlier left pads stay masked.
  // The new keys and values are appended to `cache`, which then advances by T.
  at::Tensor hidden_states(const at::Tensor& inputs_embeds, const at::Tensor& position_ids,
                           const at::Tensor& attention_mask, KvCache* cache = nullptr);
  // [..., H] -> [..., vocab] with lm_head, or the embeddings when tied.
  at::Tensor logits(const at::Tensor& hidden);
  // Logits of a left-padded batch, positions from the mask, no cache.
  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& attention_mask);

  const LlmConfig& config() const { return config_; }
  // Recompute each decoder layer in backward instead of keeping its activations; applies
  // to training forwards without a cache.
  void set_activation_checkpointing(bool on) { activation_checkpointing_ = on; }
  bool activation_checkpointing() const { return activation_checkpointing_; }
  // Training forwards without a cache run each decoder layer through `wrapper`, which then
  // decides about recomputing (activation checkpointing no longer applies). Empty: unset.
  void set_block_wrapper(BlockWrapper wrapper) { block_wrapper_ = std::move(wrapper); }

  LlamaModel model{nullptr};
  torch::nn::Linear lm_head{nullptr};  // null when tie_word_embeddings

 private:
  LlmConfig config_;
  bool activation_checkpointing_ = false;
  BlockWrapper block_wrapper_;
};
TORCH_MODULE(LlamaForCausalLM);

}  // namespace vilau
