#pragma once
// The depth transformer (official RQTransformer, SPEC §3.5): from one LLM hidden state it
// predicts the D residual codes of the next image token, one depth at a time. Parameter
// names are the official ones relative to `rqtransformer.`, so a checkpoint loads by name
// with load_module (vilau/model/load_module.h).
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "vilau/core/linear.h"
#include "vilau/core/recompute.h"
#include "vilau/llm/config.h"

namespace vilau {

// Keys and values of the depths run so far, [2, N, heads, D, head_dim] per block (keys,
// then values), allocated at the first step and written in place, so that every image position runs
// on the same buffers (a position's steps can be captured as a CUDA graph). Kept outside the module
// so that one model can serve several generations at once.
class DepthKvCache {
 public:
  int64_t depth() const { return depth_; }  // how many depths have been run
  void clear() { depth_ = 0; }              // the next step starts a position; buffers stay

 private:
  friend class DepthTransformerImpl;
  std::vector<at::Tensor> kv_;
  int64_t depth_ = 0;
};

// Causal multi-head self-attention over the depth axis, with separate projections as the
// official MultiSelfAttention has them.
class DepthSelfAttentionImpl : public torch::nn::Module {
 public:
  DepthSelfAttentionImpl(int64_t embed_dim, int64_t num_heads, double attn_dropout,
                         double resid_dropout);
  // x [N, T, E], causal over T, or [N, E] for one position a row (a decode step). With a
  // buffer kv [2, N, heads, D, head_dim] (keys, values), the T new positions are written
  // after the `cached` ones and attend to those too.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& kv = {}, int64_t cached = 0);

  // Query, key and value as one product from now on (FusedLinear), for inference.
  void fuse_projections();

  torch::nn::Linear key{nullptr}, query{nullptr}, value{nullptr}, proj{nullptr};

 private:
  FusedLinear qkv_;
  int64_t num_heads_;
  double attn_dropout_, resid_dropout_;
};
TORCH_MODULE(DepthSelfAttention);

// Pre-LN: x + attn(LN1 x), then x + W2(GELU(W1(LN2 x))).
class DepthBlockImpl : public torch::nn::Module {
 public:
  DepthBlockImpl(int64_t embed_dim, int64_t num_heads, double attn_dropout, double resid_dropout);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& kv = {}, int64_t cached = 0);

  torch::nn::LayerNorm ln1{nullptr}, ln2{nullptr};
  DepthSelfAttention attn{nullptr};
  torch::nn::Sequential mlp{nullptr};  // 0: Linear(E, 4E), 1: GELU, 2: Linear(4E, E), 3: Dropout
};
TORCH_MODULE(DepthBlock);

// The official AttentionStack; only a named container, so that names read `blocks.{i}`.
class DepthStackImpl : public torch::nn::Module {
 public:
  explicit DepthStackImpl(const DepthTransformerConfig& config);

  torch::nn::ModuleList blocks{nullptr};
};
TORCH_MODULE(DepthStack);

class DepthTransformerImpl : public torch::nn::Module {
 public:
  // depth D, codebook size K, code dimension C, LLM hidden size H.
  DepthTransformerImpl(const DepthTransformerConfig& config, int64_t depth, int64_t codebook_size,
                       int64_t code_dim, int64_t llm_hidden);

  // Teacher-forced training forward. llm_hidden [..., H]: the LLM state that predicts the
  // token; code_prefix_sums [..., D-1, C]: e_1, e_1+e_2, ..., sums of the ground-truth code
  // embeddings (e_d from codebook d). Returns logits [..., D, K]; depth d sees the hidden
  // state and the sums of the codes before it.
  at::Tensor forward(const at::Tensor& llm_hidden, const at::Tensor& code_prefix_sums);
  // forward() in training mode runs each block through `wrapper` (as LLaMA's layers).
  void set_block_wrapper(BlockWrapper wrapper) { block_wrapper_ = std::move(wrapper); }

  // Runs the next depth d = cache.depth() for every row and returns its logits [N, K]. x is
  // the LLM hidden state [N, H] at d = 0 (clear the cache first), else the sum of the
  // embeddings of the codes chosen for depths 0..d-1 [N, C]. Equals forward()'s logits at
  // depth d, but each call costs one position.
  at::Tensor step(const at::Tensor& x, DepthKvCache& cache);
  // Every block's query, key and value as one product (DepthSelfAttention), for inference.
  void fuse_projections();

  int64_t depth() const { return depth_; }
  int64_t code_dim() const { return code_dim_; }
  int64_t codebook_size() const { return codebook_size_; }

  at::Tensor pos_emb_d;  // [1, D, E]
  torch::nn::Linear in_mlp_1{nullptr}, in_mlp_2{nullptr};
  DepthStack head_transformer{nullptr};
  torch::nn::Sequential classifier_mlp{nullptr};  // layer_norm, linear

 private:
  at::Tensor classify(const at::Tensor& x);  // classifier_mlp: layer norm, then logits

  DepthTransformerConfig config_;
  int64_t depth_, codebook_size_, code_dim_, llm_hidden_;
  BlockWrapper block_wrapper_;
};
TORCH_MODULE(DepthTransformer);

}  // namespace vilau
