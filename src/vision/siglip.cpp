#include "vilau/vision/siglip.h"

#include <torch/torch.h>

#include <cmath>
#include <utility>

#include "vilau/core/error.h"
#include "vilau/io/safetensors_header.h"
#include "vilau/tokenizer/tokenizer.h"

namespace vilau {

namespace {

namespace F = torch::nn::functional;

torch::nn::LayerNorm layer_norm(int64_t size, double eps) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({size}).eps(eps));
}

// [B, L, C] -> [B, heads, L, C / heads]
at::Tensor split_heads(const at::Tensor& x, int64_t heads) {
  return x.view({x.size(0), x.size(1), heads, x.size(2) / heads}).transpose(1, 2);
}

at::Tensor merge_heads(const at::Tensor& x) {
  return x.transpose(1, 2).reshape({x.size(0), x.size(2), x.size(1) * x.size(3)});
}

}  // namespace

SiglipAttentionImpl::SiglipAttentionImpl(int64_t hidden_size, int64_t num_heads)
    : num_heads_(num_heads) {
  k_proj = register_module("k_proj", torch::nn::Linear(hidden_size, hidden_size));
  v_proj = register_module("v_proj", torch::nn::Linear(hidden_size, hidden_size));
  q_proj = register_module("q_proj", torch::nn::Linear(hidden_size, hidden_size));
  out_proj = register_module("out_proj", torch::nn::Linear(hidden_size, hidden_size));
}

at::Tensor SiglipAttentionImpl::forward(const at::Tensor& x) {
  const at::Tensor q = split_heads(q_proj(x), num_heads_);
  const at::Tensor k = split_heads(k_proj(x), num_heads_);
  const at::Tensor v = split_heads(v_proj(x), num_heads_);
  // SDPA (flash attention on a GPU) where HF 4.36 writes the product, a softmax in fp32 and
  // a second product: the same in fp32 up to rounding, and in bf16 no coarser, since the
  // fused kernels keep the probabilities in fp32.
  return out_proj(merge_heads(at::scaled_dot_product_attention(q, k, v)));
}

SiglipMlpImpl::SiglipMlpImpl(int64_t hidden_size, int64_t intermediate_size) {
  fc1 = register_module("fc1", torch::nn::Linear(hidden_size, intermediate_size));
  fc2 = register_module("fc2", torch::nn::Linear(intermediate_size, hidden_size));
}

at::Tensor SiglipMlpImpl::forward(const at::Tensor& x) { return fc2(at::gelu(fc1(x), "tanh")); }

SiglipEncoderLayerImpl::SiglipEncoderLayerImpl(int64_t hidden_size, int64_t intermediate_size,
                                               int64_t num_heads, double eps) {
  self_attn = register_module("self_attn", SiglipAttention(hidden_size, num_heads));
  layer_norm1 = register_module("layer_norm1", layer_norm(hidden_size, eps));
  mlp = register_module("mlp", SiglipMlp(hidden_size, intermediate_size));
  layer_norm2 = register_module("layer_norm2", layer_norm(hidden_size, eps));
}

at::Tensor SiglipEncoderLayerImpl::forward(const at::Tensor& x) {
  const at::Tensor h = x + self_attn(layer_norm1(x));
  return h + mlp(layer_norm2(h));
}

SiglipEncoderImpl::SiglipEncoderImpl(int64_t num_layers, int64_t hidden_size,
                                     int64_t intermediate_size, int64_t num_heads, double eps) {
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < num_layers; ++i) {
    layers->push_back(SiglipEncoderLayer(hidden_size, intermediate_size, num_heads, eps));
  }
}

at::Tensor SiglipEncoderImpl::forward(const at::Tensor& x, int64_t num_layers,
                                      std::vector<at::Tensor>* states) {
  const auto available = static_cast<int64_t>(layers->size());
  if (num_layers < 0 || num_layers > available) {
    throw ShapeError(describe("SigLIP encoder", "number of layers to run",
                              "0.." + std::to_string(available), std::to_string(num_layers)));
  }
  at::Tensor h = x;
  if (states != nullptr) {
    states->push_back(h);
  }
  for (int64_t i = 0; i < num_layers; ++i) {
    h = layers->at<SiglipEncoderLayerImpl>(i).forward(h);
    if (states != nullptr) {
      states->push_back(h);
    }
  }
  return h;
}

SiglipVisionEmbeddingsImpl::SiglipVisionEmbeddingsImpl(const SiglipVisionConfig& config) {
  patch_embedding = register_module(
      "patch_embedding",
      torch::nn::Conv2d(torch::nn::Conv2dOptions(3, config.hidden_size, config.patch_size)
                            .stride(config.patch_size)));
  position_embedding =
      register_module("position_embedding",
                      torch::nn::Embedding(config.grid() * config.grid(), config.hidden_size));
}

at::Tensor SiglipVisionEmbeddingsImpl::forward(const at::Tensor& pixels) {
  const at::Tensor patches = patch_embedding(pixels).flatten(2).transpose(1, 2);
  const int64_t positions = position_embedding->weight.size(0);
  if (patches.size(1) != positions) {
    throw ShapeError(describe("SigLIP vision embeddings", "patches per image",
                              std::to_string(positions), std::to_string(patches.size(1))));
  }
  return patches + position_embedding->weight;
}

SiglipPoolingAttentionImpl::SiglipPoolingAttentionImpl(int64_t hidden_size, int64_t num_heads)
    : num_heads_(num_heads) {
  in_proj_weight =
      register_parameter("in_proj_weight", torch::empty({3 * hidden_size, hidden_size}));
  in_proj_bias = register_parameter("in_proj_bias", torch::zeros({3 * hidden_size}));
  out_proj = register_module("out_proj", torch::nn::Linear(hidden_size, hidden_size));
  torch::nn::init::xavier_uniform_(in_proj_weight);
}

at::Tensor SiglipPoolingAttentionImpl::forward(const at::Tensor& query, const at::Tensor& states) {
  const auto w = in_proj_weight.chunk(3);
  const auto b = in_proj_bias.chunk(3);
  const at::Tensor q = split_heads(F::linear(query, w[0], b[0]), num_heads_);
  const at::Tensor k = split_heads(F::linear(states, w[1], b[1]), num_heads_);
  const at::Tensor v = split_heads(F::linear(states, w[2], b[2]), num_heads_);
  // As torch.nn.MultiheadAttention computes it: q scaled first, softmax in the input dtype.
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  const at::Tensor probs = at::softmax(at::matmul(q * scale, k.transpose(-2, -1)), -1);
  return out_proj(merge_heads(at::matmul(probs, v)));
}

SiglipPoolingHeadImpl::SiglipPoolingHeadImpl(const SiglipVisionConfig& config) {
  probe = register_parameter("probe", torch::randn({1, 1, config.hidden_size}));
  attention =
      register_module("attention", SiglipPoolingAttention(config.hidden_size, config.num_heads));
  layernorm = register_module("layernorm", layer_norm(config.hidden_size, config.layer_norm_eps));
  mlp = register_module("mlp", SiglipMlp(config.hidden_size, config.intermediate_size));
}

at::Tensor SiglipPoolingHeadImpl::forward(const at::Tensor& states) {
  const at::Tensor h = attention(probe.expand({states.size(0), 1, probe.size(2)}), states);
  return (h + mlp(layernorm(h))).select(1, 0);
}

SiglipVisionTransformerImpl::SiglipVisionTransformerImpl(const SiglipVisionConfig& config)
    : config_(config) {
  config_.validate("siglip.vision");
  embeddings = register_module("embeddings", SiglipVisionEmbeddings(config_));
  encoder = register_module(
      "encoder", SiglipEncoder(config_.num_layers, config_.hidden_size, config_.intermediate_size,
                               config_.num_heads, config_.layer_norm_eps));
  post_layernorm =
      register_module("post_layernorm", layer_norm(config_.hidden_size, config_.layer_norm_eps));
  head = register_module("head", SiglipPoolingHead(config_));
}

at::Tensor SiglipVisionTransformerImpl::forward_features(const at::Tensor& pixels,
                                                         int64_t num_layers) {
  return encoder(embeddings(pixels), num_layers);
}

int64_t SiglipVisionTransformerImpl::feature_layers() const {
  return config_.num_layers + config_.select_layer + 1;
}

at::Tensor SiglipVisionTransformerImpl::grid(const at::Tensor& pixels) {
  const at::Tensor h = forward_features(pixels, feature_layers());
  return h.view({h.size(0), config_.grid(), config_.grid(), h.size(2)});
}

SiglipOutput SiglipVisionTransformerImpl::forward(const at::Tensor& pixels) {
  const at::Tensor last = post_layernorm(forward_features(pixels, config_.num_layers));
  return {last, head(last)};
}

std::vector<at::Tensor> SiglipVisionTransformerImpl::hidden_states(const at::Tensor& pixels) {
  std::vector<at::Tensor> states;
  encoder(embeddings(pixels), config_.num_layers, &states);
  return states;
}

SiglipTextEmbeddingsImpl::SiglipTextEmbeddingsImpl(const SiglipTextConfig& config) {
  token_embedding = register_module("token_embedding",
                                    torch::nn::Embedding(config.vocab_size, config.hidden_size));
  position_embedding = register_module(
      "position_embedding", torch::nn::Embedding(config.max_positions, config.hidden_size));
}

at::Tensor SiglipTextEmbeddingsImpl::forward(const at::Tensor& input_ids) {
  const int64_t length = input_ids.size(-1);
  const int64_t positions = position_embedding->weight.size(0);
  if (length > positions) {
    throw ShapeError(describe("SigLIP text embeddings", "tokens per text",
                              "at most " + std::to_string(positions), std::to_string(length)));
  }
  return token_embedding(input_ids) + position_embedding->weight.slice(0, 0, length);
}

SiglipTextTransformerImpl::SiglipTextTransformerImpl(const SiglipTextConfig& config)
    : config_(config) {
  config_.validate("siglip.text");
  embeddings = register_module("embeddings", SiglipTextEmbeddings(config_));
  encoder = register_module(
      "encoder", SiglipEncoder(config_.num_layers, config_.hidden_size, config_.intermediate_size,
                               config_.num_heads, config_.layer_norm_eps));
  final_layer_norm =
      register_module("final_layer_norm", layer_norm(config_.hidden_size, config_.layer_norm_eps));
  head = register_module("head", torch::nn::Linear(config_.hidden_size, config_.hidden_size));
}

SiglipOutput SiglipTextTransformerImpl::forward(const at::Tensor& input_ids) {
  const at::Tensor last = final_layer_norm(encoder(embeddings(input_ids), config_.num_layers));
  return {last, head(last.select(1, -1))};
}

std::vector<at::Tensor> SiglipTextTransformerImpl::hidden_states(const at::Tensor& input_ids) {
  std::vector<at::Tensor> states;
  encoder(embeddings(input_ids), config_.num_layers, &states);
  return states;
}

at::Tensor siglip_text_ids(const Tokenizer& tokenizer, const std::vector<std::string>& texts,
                           const SiglipTextConfig& config) {
  at::Tensor ids = at::zeros({static_cast<int64_t>(texts.size()), config.max_positions}, at::kLong);
  for (size_t i = 0; i < texts.size(); ++i) {
    std::vector<int64_t> encoded = tokenizer.encode(texts[i], false);
    encoded.resize(std::min<size_t>(encoded.size(), static_cast<size_t>(config.max_positions)));
    for (size_t t = 0; t < encoded.size(); ++t) {
      if (encoded[t] >= config.vocab_size) {
        throw ConfigError(
            describe("SigLIP text tower", "token id of '" + texts[i] + "'",
                     "below the text tower's vocab_size " + std::to_string(config.vocab_size),
                     std::to_string(encoded[t])));
      }
      ids[static_cast<int64_t>(i)][static_cast<int64_t>(t)] = encoded[t];
    }
  }
  return ids;
}

}  // namespace vilau
