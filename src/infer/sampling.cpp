#include "vilau/infer/sampling.h"

#include <ATen/Context.h>
#include <torch/torch.h>

#include <limits>

#include "vilau/core/error.h"

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

at::Tensor sampling_probabilities(const at::Tensor& logits, const SamplerConfig& config) {
  if (logits.dim() != 2) {
    throw ShapeError(describe("sampler", "logits", "[N, V]", c10::str(logits.sizes())));
  }
  const double inf = std::numeric_limits<double>::infinity();
  at::Tensor scores = logits.to(at::kFloat);
  if (config.temperature > 0.0) {
    scores = scores / config.temperature;
  }
  if (config.top_k > 0 && config.top_k < scores.size(-1)) {
    const at::Tensor kth =
        std::get<0>(scores.topk(config.top_k, -1)).narrow(-1, config.top_k - 1, 1);
    scores = scores.masked_fill(scores.lt(kth), -inf);
  }
  scores = scores.nan_to_num(-inf, inf, -inf);
  at::Tensor probs = scores.softmax(-1);
  if (config.top_p < 1.0) {
    const auto [sorted, order] = probs.sort(-1, /*descending=*/true);
    const at::Tensor reached = sorted.cumsum(-1).ge(config.top_p);
    // A token goes when the mass before it already reaches p; the first always stays.
    at::Tensor remove = at::zeros_like(reached);
    remove.narrow(-1, 1, remove.size(-1) - 1).copy_(reached.narrow(-1, 0, reached.size(-1) - 1));
    probs = probs.masked_fill(remove.scatter(-1, order, remove), 0.0);
    probs = probs / probs.sum(-1, true);
  }
  return probs;
}

at::Tensor sample_tokens(const at::Tensor& logits, const SamplerConfig& config,
                         at::Generator& generator) {
  if (config.temperature == 0.0) {
    if (logits.dim() != 2) {
      throw ShapeError(describe("sampler", "logits", "[N, V]", c10::str(logits.sizes())));
    }
    return logits.to(at::kFloat).argmax(-1);
  }
  return at::multinomial(sampling_probabilities(logits, config), 1, false, generator).squeeze(-1);
}

at::Generator make_generator(at::Device device, uint64_t seed) {
  at::Generator generator = at::globalContext().defaultGenerator(device).clone();
  generator.set_current_seed(seed);
  return generator;
}

}  // namespace vilau
