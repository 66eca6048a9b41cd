#include "vilau/model/state_dict_adapter.h"

#include <algorithm>

#include "vilau/core/error.h"

namespace vilau {

namespace {

constexpr const char* kSiglip = "rqvaesiglip.siglip_model.";

struct Builder {
  std::vector<ExpectedTensor> out;
  void add(const std::string& name, std::vector<int64_t> shape, bool parameter = true) {
    out.push_back({name, std::move(shape), parameter});
  }
  void linear(const std::string& name, int64_t out_features, int64_t in_features) {
    add(name + ".weight", {out_features, in_features});
    add(name + ".bias", {out_features});
  }
  void norm(const std::string& name, int64_t dim) {
    add(name + ".weight", {dim});
    add(name + ".bias", {dim});
  }
  void conv(const std::string& name, int64_t out_ch, int64_t in_ch, int64_t k) {
    add(name + ".weight", {out_ch, in_ch, k, k});
    add(name + ".bias", {out_ch});
  }
};

// One SigLIP encoder layer (HF modeling_siglip names).
void siglip_layers(Builder& b, const std::string& prefix, int64_t layers, int64_t c,
                   int64_t inner) {
  for (int64_t i = 0; i < layers; ++i) {
    const std::string p = prefix + "encoder.layers." + std::to_string(i) + ".";
    for (const char* proj : {"k_proj", "v_proj", "q_proj", "out_proj"}) {
      b.linear(p + "self_attn." + proj, c, c);
    }
    b.norm(p + "layer_norm1", c);
    b.linear(p + "mlp.fc1", inner, c);
    b.linear(p + "mlp.fc2", c, inner);
    b.norm(p + "layer_norm2", c);
  }
}

void siglip_vision(Builder& b, const SiglipVisionConfig& v) {
  const std::string p = std::string("vision_tower.") + kSiglip + "vision_model.";
  const int64_t c = v.hidden_size;
  b.conv(p + "embeddings.patch_embedding", c, 3, v.patch_size);
  b.add(p + "embeddings.position_embedding.weight", {v.grid() * v.grid(), c});
  siglip_layers(b, p, v.num_layers, c, v.intermediate_size);
  b.norm(p + "post_layernorm", c);
  // The attention-pooling head: unused by VILA-U inference, kept for the contrastive loss.
  b.add(p + "head.probe", {1, 1, c});
  b.add(p + "head.attention.in_proj_weight", {3 * c, c});
  b.add(p + "head.attention.in_proj_bias", {3 * c});
  b.linear(p + "head.attention.out_proj", c, c);
  b.norm(p + "head.layernorm", c);
  b.linear(p + "head.mlp.fc1", v.intermediate_size, c);
  b.linear(p + "head.mlp.fc2", c, v.intermediate_size);
}

void siglip_text(Builder& b, const SiglipTextConfig& t) {
  const std::string p = std::string("vision_tower.") + kSiglip + "text_model.";
  b.add(p + "embeddings.token_embedding.weight", {t.vocab_size, t.hidden_size});
  b.add(p + "embeddings.position_embedding.weight", {t.max_positions, t.hidden_size});
  siglip_layers(b, p, t.num_layers, t.hidden_size, t.intermediate_size);
  b.norm(p + "final_layer_norm", t.hidden_size);
  b.linear(p + "head", t.hidden_size, t.hidden_size);
}

void quantizer(Builder& b, const QuantizerConfig& q, int64_t c) {
  // A shared codebook is one module repeated; safetensors keeps only its first name.
  const int64_t books = q.shared_codebook ? 1 : q.depth;
  for (int64_t d = 0; d < books; ++d) {
    const std::string p = "vision_tower.rqvaesiglip.quantizer.codebooks." + std::to_string(d) + ".";
    // A parameter (nn.Embedding) updated by EMA, not by gradients; the last row is padding.
    b.add(p + "weight", {q.codebook_size + 1, c});
    b.add(p + "cluster_size_ema", {q.codebook_size}, false);
    b.add(p + "embed_ema", {q.codebook_size, c}, false);
  }
}

void resnet_block(Builder& b, const std::string& p, int64_t in, int64_t out) {
  b.norm(p + "norm1", in);
  b.conv(p + "conv1", out, in, 3);
  b.norm(p + "norm2", out);
  b.conv(p + "conv2", out, out, 3);
  if (in != out) {
    b.conv(p + "nin_shortcut", out, in, 1);
  }
}

void attn_block(Builder& b, const std::string& p, int64_t c) {
  b.norm(p + "norm", c);
  for (const char* proj : {"q", "k", "v", "proj_out"}) {
    b.conv(p + proj, c, c, 1);
  }
}

void pixel_decoder(Builder& b, const PixelDecoderConfig& d, int64_t c) {
  const std::string p = "vision_tower.rqvaesiglip.";
  b.conv(p + "post_quant_conv", d.z_channels, c, 1);
  const auto levels = static_cast<int64_t>(d.ch_mult.size());
  int64_t block_in = d.ch * d.ch_mult.back();
  int64_t resolution = d.resolution >> (levels - 1);
  b.conv(p + "decoder.conv_in", block_in, d.z_channels, 3);
  resnet_block(b, p + "decoder.mid.block_1.", block_in, block_in);
  attn_block(b, p + "decoder.mid.attn_1.", block_in);
  resnet_block(b, p + "decoder.mid.block_2.", block_in, block_in);
  for (int64_t level = levels - 1; level >= 0; --level) {
    const std::string up = p + "decoder.up." + std::to_string(level) + ".";
    const int64_t block_out = d.ch * d.ch_mult[level];
    const bool attention = std::find(d.attn_resolutions.begin(), d.attn_resolutions.end(),
                                     resolution) != d.attn_resolutions.end();
    for (int64_t i = 0; i <= d.num_res_blocks; ++i) {
      resnet_block(b, up + "block." + std::to_string(i) + ".", block_in, block_out);
      block_in = block_out;
      if (attention) {
        attn_block(b, up + "attn." + std::to_string(i) + ".", block_in);
      }
    }
    if (level != 0) {
      b.conv(up + "upsample.conv", block_in, block_in, 3);
      resolution *= 2;
    }
  }
  b.norm(p + "decoder.norm_out", block_in);
  b.conv(p + "decoder.conv_out", d.out_ch, block_in, 3);
}

void depth_transformer(Builder& b, const DepthTransformerConfig& t, int64_t depth, int64_t codebook,
                       int64_t c, int64_t llm_hidden) {
  const std::string p = "vision_tower.rqtransformer.";
  const int64_t e = t.embed_dim;
  b.add(p + "pos_emb_d", {1, depth, e});
  b.linear(p + "in_mlp_1", e, c);
  b.linear(p + "in_mlp_2", e, llm_hidden);
  for (int64_t i = 0; i < t.num_layers; ++i) {
    const std::string blk = p + "head_transformer.blocks." + std::to_string(i) + ".";
    b.norm(blk + "ln1", e);
    b.norm(blk + "ln2", e);
    for (const char* proj : {"key", "query", "value", "proj"}) {
      b.linear(blk + "attn." + proj, e, e);
    }
    b.linear(blk + "mlp.0", 4 * e, e);
    b.linear(blk + "mlp.2", e, 4 * e);
  }
  b.norm(p + "classifier_mlp.layer_norm", e);
  b.linear(p + "classifier_mlp.linear", codebook, e);
}

void llama(Builder& b, const LlmConfig& l) {
  const int64_t h = l.hidden_size, kv = l.num_kv_heads * (h / l.num_heads);
  b.add("llm.model.embed_tokens.weight", {l.vocab_size, h});
  for (int64_t i = 0; i < l.num_layers; ++i) {
    const std::string p = "llm.model.layers." + std::to_string(i) + ".";
    b.add(p + "self_attn.q_proj.weight", {h, h});
    b.add(p + "self_attn.k_proj.weight", {kv, h});
    b.add(p + "self_attn.v_proj.weight", {kv, h});
    b.add(p + "self_attn.o_proj.weight", {h, h});
    b.add(p + "mlp.gate_proj.weight", {l.intermediate_size, h});
    b.add(p + "mlp.up_proj.weight", {l.intermediate_size, h});
    b.add(p + "mlp.down_proj.weight", {h, l.intermediate_size});
    b.add(p + "input_layernorm.weight", {h});
    b.add(p + "post_attention_layernorm.weight", {h});
  }
  b.add("llm.model.norm.weight", {h});
  if (!l.tie_word_embeddings) {
    b.add("llm.lm_head.weight", {l.vocab_size, h});
  }
}

}  // namespace

const char* component_folder(Component component) {
  switch (component) {
    case Component::llm:
      return "llm";
    case Component::vision_tower:
      return "vision_tower";
    case Component::mm_projector:
      return "mm_projector";
  }
  return "?";
}

std::string to_vilau_name(Component component, const std::string& official_name) {
  std::string name = official_name;
  if (component == Component::vision_tower &&
      (name == "rqvaesiglip.logit_scale" || name == "rqvaesiglip.logit_bias")) {
    name = kSiglip + name.substr(std::string("rqvaesiglip.").size());
  }
  return std::string(component_folder(component)) + "." + name;
}

std::pair<Component, std::string> to_official_name(const std::string& vilau_name) {
  for (Component c : kComponents) {
    const std::string prefix = std::string(component_folder(c)) + ".";
    if (vilau_name.compare(0, prefix.size(), prefix) == 0) {
      return {c, vilau_name.substr(prefix.size())};
    }
  }
  throw ShapeError(describe("state dict", "tensor '" + vilau_name + "'",
                            "a name starting with llm., vision_tower. or mm_projector."));
}

std::vector<ExpectedTensor> expected_tensors(const ModelConfig& config) {
  Builder b;
  llama(b, config.llm);
  const VisionTowerConfig& tower = config.vision_tower;
  const int64_t c = tower.vision.hidden_size;
  siglip_text(b, tower.text);
  siglip_vision(b, tower.vision);
  b.add(std::string("vision_tower.") + kSiglip + "logit_scale", {1});
  b.add(std::string("vision_tower.") + kSiglip + "logit_bias", {1});
  quantizer(b, tower.quantizer, c);
  pixel_decoder(b, tower.decoder, c);
  depth_transformer(b, config.depth_transformer, tower.quantizer.depth,
                    tower.quantizer.codebook_size, c, config.llm.hidden_size);
  b.linear("mm_projector.layers.0", config.llm.hidden_size, c);
  b.linear("mm_projector.layers.2", config.llm.hidden_size, config.llm.hidden_size);
  return b.out;
}

namespace {

// Longest prefix first, so the depth transformer is not counted as the rest of the tower.
constexpr std::pair<const char*, const char*> kGroups[] = {
    {"llm.", "llm"},
    {"mm_projector.", "mm_projector"},
    {"vision_tower.rqvaesiglip.siglip_model.vision_model.", "vision_tower.siglip_vision"},
    {"vision_tower.rqvaesiglip.siglip_model.", "vision_tower.siglip_text"},
    {"vision_tower.rqvaesiglip.quantizer.", "vision_tower.quantizer"},
    {"vision_tower.rqvaesiglip.", "vision_tower.pixel_decoder"},
    {"vision_tower.rqtransformer.", "vision_tower.depth_transformer"},
};

}  // namespace

std::string component_group(const std::string& vilau_name) {
  for (const auto& [prefix, group] : kGroups) {
    if (vilau_name.rfind(prefix, 0) == 0) {
      return group;
    }
  }
  return "other";
}

std::vector<ComponentCount> count_parameters(const ModelConfig& config) {
  std::vector<ComponentCount> counts;
  for (const auto& group : kGroups) {
    counts.push_back({group.second, 0, 0});
  }
  for (const ExpectedTensor& t : expected_tensors(config)) {
    int64_t n = 1;
    for (int64_t d : t.shape) {
      n *= d;
    }
    const std::string group = component_group(t.name);
    auto it = std::find_if(counts.begin(), counts.end(),
                           [&](const auto& c) { return c.component == group; });
    (t.parameter ? it->parameters : it->buffers) += n;
  }
  return counts;
}

}  // namespace vilau
