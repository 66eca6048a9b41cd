#include "vilau/infer/sampling.h"

#include <ATen/Context.h>
#include <torch/torch.h>

#include <limits>

#include "vilau/core/error.h"
#include "vilau/core/linear.h"

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

namespace {

// The tokens that may be drawn: probabilities [N, C] (not renormalised after top-p), sorted
// by probability when top-k or top-p applies, and their ids [N, C] (undefined when the
// candidates are the whole row in vocabulary order).
struct Candidates {
  at::Tensor probs, ids;
};

Candidates candidates(const at::Tensor& logits, const SamplerConfig& config) {
  if (logits.dim() != 2) {
    throw ShapeError(describe("sampler", "logits", "[N, V]", c10::str(logits.sizes())));
  }
  const double inf = std::numeric_limits<double>::infinity();
  at::Tensor scores = logits.scalar_type() == at::kFloat ? logits : logits.to(at::kFloat);
  if (config.temperature != 1.0) scores = scores / config.temperature;
  scores = scores.nan_to_num(-inf, inf, -inf);
  const int64_t vocab = scores.size(-1);
  Candidates out;
  at::Tensor values = scores;
  if (config.top_k > 0 && config.top_k < vocab) {
    std::tie(values, out.ids) = scores.topk(std::min(vocab, config.top_k + kTopKTieSlack));
    // topk's values are a tensor of their own: masked in place.
    values.masked_fill_(values.lt(window(values, -1, config.top_k - 1, 1)), -inf);
  } else if (config.top_p < 1.0) {
    std::tie(values, out.ids) = scores.sort(-1, /*descending=*/true);
  }
  out.probs = values.softmax(-1);
  if (config.top_p < 1.0) {
    // A token goes when the mass before it already reaches p; the first always stays.
    // Candidate i + 1 reads the mass up to i: the softmax's fresh output, masked in place.
    const int64_t c = out.probs.size(-1);
    if (c > 1) {
      const at::Tensor reached = window(out.probs.cumsum(-1), -1, 0, c - 1).ge(config.top_p);
      window(out.probs, -1, 1, c - 1).masked_fill_(reached, 0.0);
    }
  }
  return out;
}

}  // namespace

at::Tensor sampling_probabilities(const at::Tensor& logits, const SamplerConfig& config) {
  const Candidates c = candidates(logits, config);
  const at::Tensor probs = c.probs / c.probs.sum(-1, true);
  if (!c.ids.defined()) return probs;
  return at::zeros({logits.size(0), logits.size(1)}, probs.options()).scatter_(-1, c.ids, probs);
}

at::Tensor sample_with_uniforms(const at::Tensor& logits, const SamplerConfig& config,
                                const at::Tensor& uniforms) {
  const Candidates c = candidates(logits, config);
  const at::Tensor cdf = c.probs.cumsum(-1);
  const int64_t last = cdf.size(-1) - 1;
  // u < 1 is shrunk by 2^-23 first, so that u * total stays below the total after rounding:
  // the first candidate whose cumulative mass exceeds it then always has mass of its own.
  const at::Tensor target = (uniforms * (1.0 - 0x1p-23)) * window(cdf, -1, last, 1);
  const at::Tensor pick = at::searchsorted(cdf, target, false, /*right=*/true);
  return (c.ids.defined() ? c.ids.gather(-1, pick) : pick).squeeze(-1);
}

at::Tensor sample_tokens(const at::Tensor& logits, const SamplerConfig& config,
                         at::Generator& generator) {
  if (config.temperature == 0.0) {
    if (logits.dim() != 2) {
      throw ShapeError(describe("sampler", "logits", "[N, V]", c10::str(logits.sizes())));
    }
    return logits.argmax(-1);
  }
  return sample_with_uniforms(
      logits, config, at::rand({logits.size(0), 1}, generator, logits.options().dtype(at::kFloat)));
}

at::Generator make_generator(at::Device device, uint64_t seed) {
  at::Generator generator = at::globalContext().defaultGenerator(device).clone();
  generator.set_current_seed(seed);
  return generator;
}

}  // namespace vilau
