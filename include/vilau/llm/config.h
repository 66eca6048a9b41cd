#pragma once
// LLM-side hyper-parameters (SPEC §3): the LLaMA backbone and the depth transformer.
#include <cstdint>
#include <string>

#include "vilau/core/config.h"

namespace vilau {

struct LlmConfig {
  int64_t vocab_size = 0;  // text vocabulary including the four added tokens
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  double rope_scaling_factor = 1.0;  // linear scaling; 1 means none
  bool tie_word_embeddings = false;

  template <class V>
  void visit(V& v) {
    v.field("vocab_size", vocab_size, required);
    v.field("hidden_size", hidden_size, required);
    v.field("intermediate_size", intermediate_size, required);
    v.field("num_layers", num_layers, required);
    v.field("num_heads", num_heads, required);
    v.field("num_kv_heads", num_kv_heads, required);
    v.field("max_position_embeddings", max_position_embeddings, required);
    v.field("rms_norm_eps", rms_norm_eps);
    v.field("rope_theta", rope_theta);
    v.field("rope_scaling_factor", rope_scaling_factor);
    v.field("tie_word_embeddings", tie_word_embeddings);
  }
  void validate(const std::string& path) const;
};

// The official RQTransformer: one LLM hidden state in, D codes out.
struct DepthTransformerConfig {
  int64_t embed_dim = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  double resid_dropout = 0.1;
  double attn_dropout = 0.0;

  template <class V>
  void visit(V& v) {
    v.field("embed_dim", embed_dim, required);
    v.field("num_layers", num_layers, required);
    v.field("num_heads", num_heads, required);
    v.field("resid_dropout", resid_dropout);
    v.field("attn_dropout", attn_dropout);
  }
  void validate(const std::string& path) const;
};

}  // namespace vilau
