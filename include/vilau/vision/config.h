#pragma once
// Vision-tower hyper-parameters (SPEC §2). The official vision_tower/config.json does not
// store the SigLIP sizes; presets give them and the checkpoint loader checks them
// against the tensor shapes.
#include <cstdint>
#include <string>
#include <vector>

#include "vilau/core/config.h"

namespace vilau {

struct SiglipVisionConfig {
  int64_t image_size = 0;
  int64_t patch_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  double layer_norm_eps = 1e-6;
  int64_t select_layer = -2;  // the quantizer reads the second-to-last layer

  template <class V>
  void visit(V& v) {
    v.field("image_size", image_size, required);
    v.field("patch_size", patch_size, required);
    v.field("hidden_size", hidden_size, required);
    v.field("intermediate_size", intermediate_size, required);
    v.field("num_layers", num_layers, required);
    v.field("num_heads", num_heads, required);
    v.field("layer_norm_eps", layer_norm_eps);
    v.field("select_layer", select_layer);
  }
  int64_t grid() const { return patch_size > 0 ? image_size / patch_size : 0; }
  void validate(const std::string& path) const;
};

struct SiglipTextConfig {
  int64_t vocab_size = 0;
  int64_t max_positions = 64;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  double layer_norm_eps = 1e-6;

  template <class V>
  void visit(V& v) {
    v.field("vocab_size", vocab_size, required);
    v.field("max_positions", max_positions);
    v.field("hidden_size", hidden_size, required);
    v.field("intermediate_size", intermediate_size, required);
    v.field("num_layers", num_layers, required);
    v.field("num_heads", num_heads, required);
    v.field("layer_norm_eps", layer_norm_eps);
  }
  void validate(const std::string& path) const;
};

struct QuantizerConfig {
  int64_t codebook_size = 16384;
  int64_t depth = 0;  // D codes per position
  bool shared_codebook = false;
  double decay = 0.99;  // EMA decay of cluster sizes and sums
  double eps = 1e-5;    // Laplace smoothing of cluster sizes
  bool restart_unused = true;
  double commitment_weight = 0.25;

  template <class V>
  void visit(V& v) {
    v.field("codebook_size", codebook_size, required);
    v.field("depth", depth, required);
    v.field("shared_codebook", shared_codebook);
    v.field("decay", decay);
    v.field("eps", eps);
    v.field("restart_unused", restart_unused);
    v.field("commitment_weight", commitment_weight);
  }
  void validate(const std::string& path) const;
};

// The official `ddconfig`, plus `latent_shape` (the official decoder_latent_shape).
struct PixelDecoderConfig {
  int64_t ch = 0;
  std::vector<int64_t> ch_mult;
  int64_t num_res_blocks = 0;
  std::vector<int64_t> attn_resolutions;
  int64_t z_channels = 0;
  int64_t resolution = 0;
  int64_t out_ch = 3;
  double dropout = 0.0;
  std::vector<int64_t> latent_shape;  // empty: decode the encoder grid as is

  template <class V>
  void visit(V& v) {
    v.field("ch", ch, required);
    v.field("ch_mult", ch_mult, required);
    v.field("num_res_blocks", num_res_blocks, required);
    v.field("attn_resolutions", attn_resolutions);
    v.field("z_channels", z_channels, required);
    v.field("resolution", resolution, required);
    v.field("out_ch", out_ch);
    v.field("dropout", dropout);
    v.field("latent_shape", latent_shape);
  }
  void validate(const std::string& path) const;
};

struct VisionTowerConfig {
  SiglipVisionConfig vision;
  SiglipTextConfig text;
  QuantizerConfig quantizer;
  PixelDecoderConfig decoder;

  template <class V>
  void visit(V& v) {
    v.field("vision", vision, required);
    v.field("text", text, required);
    v.field("quantizer", quantizer, required);
    v.field("decoder", decoder, required);
  }
  void validate(const std::string& path) const;
};

}  // namespace vilau
