#pragma once
// The SigLIP towers of the VILA-U vision tower (SPEC §2.2, §2.5). Parameter names are those
// of HF modeling_siglip relative to `vision_model.` / `text_model.`, so a checkpoint loads
// by name with load_module (vilau/model/load_module.h).
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "vilau/vision/config.h"

namespace vilau {

class Tokenizer;

// Bidirectional multi-head self-attention (HF SiglipAttention).
class SiglipAttentionImpl : public torch::nn::Module {
 public:
  SiglipAttentionImpl(int64_t hidden_size, int64_t num_heads);
  at::Tensor forward(const at::Tensor& x);

  torch::nn::Linear k_proj{nullptr}, v_proj{nullptr}, q_proj{nullptr}, out_proj{nullptr};

 private:
  int64_t num_heads_;
};
TORCH_MODULE(SiglipAttention);

// fc1 -> gelu (tanh approximation) -> fc2.
class SiglipMlpImpl : public torch::nn::Module {
 public:
  SiglipMlpImpl(int64_t hidden_size, int64_t intermediate_size);
  at::Tensor forward(const at::Tensor& x);

  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(SiglipMlp);

// Pre-LN: x + attn(LN1 x), then x + mlp(LN2 x).
class SiglipEncoderLayerImpl : public torch::nn::Module {
 public:
  SiglipEncoderLayerImpl(int64_t hidden_size, int64_t intermediate_size, int64_t num_heads,
                         double eps);
  at::Tensor forward(const at::Tensor& x);

  SiglipAttention self_attn{nullptr};
  torch::nn::LayerNorm layer_norm1{nullptr};
  SiglipMlp mlp{nullptr};
  torch::nn::LayerNorm layer_norm2{nullptr};
};
TORCH_MODULE(SiglipEncoderLayer);

class SiglipEncoderImpl : public torch::nn::Module {
 public:
  SiglipEncoderImpl(int64_t num_layers, int64_t hidden_size, int64_t intermediate_size,
                    int64_t num_heads, double eps);
  // Runs the first `num_layers` layers. When `states` is given it receives the input and the
  // output of every layer run, as HF's `hidden_states` does.
  at::Tensor forward(const at::Tensor& x, int64_t num_layers,
                     std::vector<at::Tensor>* states = nullptr);

  torch::nn::ModuleList layers{nullptr};
};
TORCH_MODULE(SiglipEncoder);

class SiglipVisionEmbeddingsImpl : public torch::nn::Module {
 public:
  explicit SiglipVisionEmbeddingsImpl(const SiglipVisionConfig& config);
  // [B, 3, S, S] pixels in [-1, 1] -> [B, (S/P)^2, C], row-major over the patch grid.
  at::Tensor forward(const at::Tensor& pixels);

  torch::nn::Conv2d patch_embedding{nullptr};
  torch::nn::Embedding position_embedding{nullptr};
};
TORCH_MODULE(SiglipVisionEmbeddings);

// torch.nn.MultiheadAttention's parameter layout (packed q/k/v projection), cross-attention
// only, since the pooling head attends from its probe to the patch states.
class SiglipPoolingAttentionImpl : public torch::nn::Module {
 public:
  SiglipPoolingAttentionImpl(int64_t hidden_size, int64_t num_heads);
  at::Tensor forward(const at::Tensor& query, const at::Tensor& states);

  at::Tensor in_proj_weight, in_proj_bias;
  torch::nn::Linear out_proj{nullptr};

 private:
  int64_t num_heads_;
};
TORCH_MODULE(SiglipPoolingAttention);

// Multihead attention pooling (MAP): a learned probe attends to all patches.
class SiglipPoolingHeadImpl : public torch::nn::Module {
 public:
  explicit SiglipPoolingHeadImpl(const SiglipVisionConfig& config);
  at::Tensor forward(const at::Tensor& states);  // [B, L, C] -> [B, C]

  at::Tensor probe;
  SiglipPoolingAttention attention{nullptr};
  torch::nn::LayerNorm layernorm{nullptr};
  SiglipMlp mlp{nullptr};
};
TORCH_MODULE(SiglipPoolingHead);

struct SiglipOutput {
  at::Tensor last_hidden_state;  // [B, L, C], after the final LayerNorm
  at::Tensor pooled;             // [B, C]
};

class SiglipVisionTransformerImpl : public torch::nn::Module {
 public:
  explicit SiglipVisionTransformerImpl(const SiglipVisionConfig& config);

  // Hidden states [B, L, C] after the first `num_layers` encoder layers (0: the embeddings).
  at::Tensor forward_features(const at::Tensor& pixels, int64_t num_layers);
  // The layers VILA-U's quantizer reads: num_layers + select_layer + 1.
  int64_t feature_layers() const;
  // The quantizer input: forward_features(pixels, feature_layers()) as [B, H, W, C].
  at::Tensor grid(const at::Tensor& pixels);
  // Every layer run (post_layernorm and head included); only the contrastive branch needs it.
  SiglipOutput forward(const at::Tensor& pixels);
  // The embeddings and each layer's output: num_layers + 1 tensors, as HF returns them.
  std::vector<at::Tensor> hidden_states(const at::Tensor& pixels);

  const SiglipVisionConfig& config() const { return config_; }

  SiglipVisionEmbeddings embeddings{nullptr};
  SiglipEncoder encoder{nullptr};
  torch::nn::LayerNorm post_layernorm{nullptr};
  SiglipPoolingHead head{nullptr};

 private:
  SiglipVisionConfig config_;
};
TORCH_MODULE(SiglipVisionTransformer);

class SiglipTextEmbeddingsImpl : public torch::nn::Module {
 public:
  explicit SiglipTextEmbeddingsImpl(const SiglipTextConfig& config);
  at::Tensor forward(const at::Tensor& input_ids);  // [B, T] -> [B, T, C], T <= max_positions

  torch::nn::Embedding token_embedding{nullptr};
  torch::nn::Embedding position_embedding{nullptr};
};
TORCH_MODULE(SiglipTextEmbeddings);

class SiglipTextTransformerImpl : public torch::nn::Module {
 public:
  explicit SiglipTextTransformerImpl(const SiglipTextConfig& config);

  // No attention mask: SigLIP's text tower attends over padding too, and pools the last
  // position, which is why its inputs are always padded to max_positions.
  SiglipOutput forward(const at::Tensor& input_ids);
  // The embeddings and each layer's output: num_layers + 1 tensors, as HF returns them.
  std::vector<at::Tensor> hidden_states(const at::Tensor& input_ids);

  const SiglipTextConfig& config() const { return config_; }

  SiglipTextEmbeddings embeddings{nullptr};
  SiglipEncoder encoder{nullptr};
  torch::nn::LayerNorm final_layer_norm{nullptr};
  torch::nn::Linear head{nullptr};

 private:
  SiglipTextConfig config_;
};
TORCH_MODULE(SiglipTextTransformer);

// Texts as text-tower ids [N, max_positions]: no BOS, cut or padded with id 0 to
// max_positions, as SigLIP always pads. ConfigError for an id outside the tower's vocabulary
// (a tokenizer that does not belong to the tower).
at::Tensor siglip_text_ids(const Tokenizer& tokenizer, const std::vector<std::string>& texts,
                           const SiglipTextConfig& config);

}  // namespace vilau
