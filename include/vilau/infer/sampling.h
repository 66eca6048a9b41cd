#pragma once
// Sampling settings (SPEC §4.1, §4.3). Defaults are those of the official inference.py:
// images sample with CFG 3, top-k 900 then top-p 0.96; chat answers with
// temperature 0.9 and top-p 0.6.
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "vilau/core/config.h"

namespace vilau {

struct SamplerConfig {
  double temperature = 1.0;  // 0 means greedy
  int64_t top_k = 0;         // 0 disables
  double top_p = 1.0;        // 1 disables

  template <class V>
  void visit(V& v) {
    v.field("temperature", temperature);
    v.field("top_k", top_k);
    v.field("top_p", top_p);
  }
  void validate(const std::string& path) const;
};

struct SamplingConfig {
  double cfg_scale = 3.0;
  SamplerConfig image{1.0, 900, 0.96};
  SamplerConfig text{0.9, 0, 0.6};
  int64_t max_new_tokens = 512;
  int64_t seed = 0;

  template <class V>
  void visit(V& v) {
    v.field("cfg_scale", cfg_scale);
    v.field("image", image);
    v.field("text", text);
    v.field("max_new_tokens", max_new_tokens);
    v.field("seed", seed);
  }
  void validate(const std::string& path = "sampling") const;
};

// The official sample_from_logits on fp32 copies of logits [N, V]: divide by the
// temperature, keep the top-k values (ties with the k-th kept), softmax, then drop the tokens
// whose preceding cumulative probability is >= top_p (the most likely one always stays).
// Computed the fast way: top-k first, then the softmax and top-p within the survivors only,
// which gives the same distribution as masking and sorting the whole row. Ties with the
// k-th value are kept up to kTopKTieSlack beyond k; more are cut (a quirk of the fast path,
// reachable only when logits repeat dozens of times at exactly the k-th value).
constexpr int64_t kTopKTieSlack = 64;

// The distribution sample_tokens draws from, as probabilities [N, V] fp32.
at::Tensor sampling_probabilities(const at::Tensor& logits, const SamplerConfig& config);

// One token per row [N] int64: the argmax when temperature is 0, else a draw from
// sampling_probabilities with `generator` (which must live on the logits' device). The draw
// runs on the device without host synchronisation: one uniform per row, inverted through
// the cumulative probabilities of the survivors.
at::Tensor sample_tokens(const at::Tensor& logits, const SamplerConfig& config,
                         at::Generator& generator);

// sample_tokens with the uniforms [N, 1] in [0, 1) given. With top-k or top-p set, the
// same token for the same uniform as inverting the official full-row distribution sorted
// by probability; with neither, the row is inverted in vocabulary order.
at::Tensor sample_with_uniforms(const at::Tensor& logits, const SamplerConfig& config,
                                const at::Tensor& uniforms);

// A generator for `device` seeded with `seed`, independent of the global one.
at::Generator make_generator(at::Device device, uint64_t seed);

}  // namespace vilau
