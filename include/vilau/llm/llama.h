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

#include "vilau/core/linear.h"
#include "vilau/core/recompute.h"
#include "vilau/llm/config.h"

namespace vilau {

// Preallocated keys and values for every layer, [B, kv_heads, max_length, head_dim] each.
// A prefill appends its T new positions to every layer, then advances length() once.
// Decoding (LlamaForCausalLM::decode) writes one position per row in place: the position,
// the slot and the visible keys live on the device and every tensor keeps its shape and
// address from step to step, so one step can be captured as a CUDA graph and replayed.
class KvCache {
 public:
  KvCache(const LlmConfig& config, int64_t batch, int64_t max_length, at::ScalarType dtype,
          at::Device device);

  int64_t batch() const { return visible_.size(0); }
  int64_t length() const { return length_; }
  int64_t max_length() const { return max_length_; }
  // ShapeError unless `steps` more positions fit.
  void check_room(int64_t steps) const;
  // Writes k, v [B, kv_heads, T, head_dim] after the current length of `layer` and returns
  // views of everything cached for it so far, length() + T positions.
  std::pair<at::Tensor, at::Tensor> append(int64_t layer, const at::Tensor& k, const at::Tensor& v);
  // Commits the positions the layers just appended; `attention_mask` [B, length() + steps]
  // and `position_ids` [B, steps] are those of the prefill, so that decoding continues them.
  void advance(int64_t steps, const at::Tensor& attention_mask, const at::Tensor& position_ids);

  // cos and sin [B, 1, T, head_dim] for position_ids [B, T], from tables computed once for
  // every position the cache holds; sin has its first half negated (see apply_rotary).
  std::pair<at::Tensor, at::Tensor> rotary(const at::Tensor& position_ids) const;

  // One decode step: begin_step() marks the slot visible and returns the rotary rows of
  // each row's next position; write() stores a layer's k, v [B, kv_heads, 1, head_dim] in
  // the slot and returns the whole buffers; visible() is the [B, 1, 1, max_length] mask;
  // end_step() moves slot and positions on.
  std::pair<at::Tensor, at::Tensor> begin_step();
  bool decoding() const { return decoding_; }
  std::pair<at::Tensor, at::Tensor> write(int64_t layer, const at::Tensor& k, const at::Tensor& v);
  const at::Tensor& visible() const { return visible_; }
  void end_step();
  // A step replayed from a CUDA graph moved the device state on without running the host
  // code: this moves the host's count along.
  void count_replayed_step();

 private:
  std::vector<at::Tensor> keys_, values_;
  at::Tensor visible_;        // [B, 1, 1, max_length] bool: cached positions that are tokens
  at::Tensor next_position_;  // [B] int64: the position id of each row's next token
  at::Tensor slot_;           // [1] int64: length() on the device
  at::Tensor cos_, sin_;      // [max_length, head_dim]
  int64_t max_length_;
  int64_t length_ = 0;
  bool decoding_ = false;
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
  // The width and eps as 0-dim tensors of the input's dtype and device, made on first use:
  // a Scalar operand is wrapped and cast at every call, four dispatched operators each.
  at::Tensor width_, eps_tensor_;
};
TORCH_MODULE(LlamaRmsNorm);

// Multi-head attention with grouped key/value heads and rotary positions.
class LlamaAttentionImpl : public torch::nn::Module {
 public:
  explicit LlamaAttentionImpl(const LlmConfig& config);
  // `allowed` is a boolean [B, 1, T, S] mask over the S = past + T key positions, or
  // undefined for plain causal attention without a cache. While the cache is decoding, the
  // step's keys go into its slot and its visible() mask applies.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                     const at::Tensor& allowed, KvCache* cache, int64_t layer);

  // Query, key and value as one product from now on (FusedLinear), for inference.
  void fuse_projections();

  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  FusedLinear qkv_;
  int64_t num_heads_, num_kv_heads_, head_dim_;
};
TORCH_MODULE(LlamaAttention);

// SwiGLU: down(silu(gate x) * up x).
class LlamaMlpImpl : public torch::nn::Module {
 public:
  LlamaMlpImpl(int64_t hidden_size, int64_t intermediate_size);
  at::Tensor forward(const at::Tensor& x);
  // Gate and up as one product from now on (FusedLinear), for inference.
  void fuse_projections();

  torch::nn::Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};

 private:
  FusedLinear gate_up_;
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
  // `causal`: the caller knows that every row is one unpadded sample (the mask is all
  // ones), so attention runs as SDPA's is_causal without a materialised mask, the form
  // flash attention takes.
  at::Tensor hidden_states(const at::Tensor& inputs_embeds, const at::Tensor& position_ids,
                           const at::Tensor& attention_mask, KvCache* cache = nullptr,
                           bool causal = false);
  // One position per row after a prefill into `cache`: inputs_embeds [B, 1, H] -> [B, 1, H],
  // or [B, H] -> [B, H].
  // Fixed shapes, no host synchronisation, no allocation that depends on the position.
  at::Tensor decode(const at::Tensor& inputs_embeds, KvCache& cache);
  // Every layer's query/key/value and gate/up as one product each, for inference (see
  // FusedLinear: the parameters keep their names and values).
  void fuse_projections();
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
