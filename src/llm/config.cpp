#include "vilau/llm/config.h"

#include <algorithm>

namespace vilau {

void LlmConfig::validate(const std::string& path) const {
  config_check(vocab_size > 0, path + ".vocab_size", "a positive size", std::to_string(vocab_size));
  config_check(num_heads > 0 && hidden_size % num_heads == 0, path + ".num_heads",
               "a positive divisor of hidden_size " + std::to_string(hidden_size),
               std::to_string(num_heads));
  config_check(num_kv_heads > 0 && num_heads % num_kv_heads == 0, path + ".num_kv_heads",
               "a positive divisor of num_heads " + std::to_string(num_heads),
               std::to_string(num_kv_heads));
  config_check((hidden_size / std::max<int64_t>(num_heads, 1)) % 2 == 0, path + ".hidden_size",
               "an even head dimension for RoPE", std::to_string(hidden_size));
  config_check(num_layers > 0, path + ".num_layers", "a positive count",
               std::to_string(num_layers));
  config_check(rope_scaling_factor >= 1.0, path + ".rope_scaling_factor", "a factor >= 1",
               std::to_string(rope_scaling_factor));
}

void DepthTransformerConfig::validate(const std::string& path) const {
  config_check(num_heads > 0 && embed_dim % num_heads == 0, path + ".num_heads",
               "a positive divisor of embed_dim " + std::to_string(embed_dim),
               std::to_string(num_heads));
  config_check(num_layers > 0, path + ".num_layers", "a positive count",
               std::to_string(num_layers));
}

}  // namespace vilau
