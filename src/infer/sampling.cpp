#include "vilau/infer/sampling.h"

namespace vilau {

void SamplerConfig::validate(const std::string& path) const {
  config_check(temperature >= 0.0, path + ".temperature", "a value >= 0 (0 is greedy)",
               std::to_string(temperature));
  config_check(top_k >= 0, path + ".top_k", "a value >= 0 (0 disables)", std::to_string(top_k));
  config_check(top_p > 0.0 && top_p <= 1.0, path + ".top_p", "a value in (0, 1]",
               std::to_string(top_p));
}

void SamplingConfig::validate(const std::string& path) const {
  config_check(cfg_scale >= 0.0, path + ".cfg_scale", "a value >= 0", std::to_string(cfg_scale));
  image.validate(path + ".image");
  text.validate(path + ".text");
  config_check(max_new_tokens > 0, path + ".max_new_tokens", "a positive count",
               std::to_string(max_new_tokens));
}

}  // namespace vilau
