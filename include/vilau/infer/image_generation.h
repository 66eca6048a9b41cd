#pragma once
// Text-to-image and text-to-video generation with classifier-free guidance (SPEC §4.1,
// §4.2). Unlike the official loop, no lm_head runs and no text token is sampled during
// image steps (§4.6): each LLM step's hidden state goes straight to the depth transformer,
// which runs with its own cache.
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "vilau/infer/llm_sequence.h"
#include "vilau/infer/sampling.h"
#include "vilau/infer/step_graph.h"
#include "vilau/model/vila_u.h"

namespace vilau {

class Tokenizer;

// Where the conditional and unconditional rows of a CFG batch sit.
enum class CfgLayout {
  halves,       // official: N conditional rows, then N unconditional ones
  interleaved,  // conditional row i at 2i, its unconditional partner at 2i + 1
};
CfgLayout parse_cfg_layout(const std::string& name);  // ConfigError for an unknown name

// uncond + scale * (cond - uncond) on logits [2N, K] laid out as `layout`; scale 1 returns
// the conditional logits exactly. With plausibility > 0, codes whose conditional
// probability is below plausibility times the row's most likely code's get -inf: guidance
// then only reorders what the conditional model finds plausible, instead of lifting a code
// it rules out whose unconditional logit happens to be lower still (contrastive decoding's
// adaptive plausibility, Li et al. 2023). 0 is the official rule.
at::Tensor combine_cfg(const at::Tensor& logits, double scale, CfgLayout layout,
                       double plausibility = 0.0);

struct ImageOptions {
  SamplerConfig sampler{1.0, 900, 0.96};
  double cfg_scale = 3.0;
  double cfg_plausibility = 0.0;  // see combine_cfg; 0: official
  CfgLayout layout = CfgLayout::halves;
  // false runs conditional rows only (no CFG batch at all).
  bool unconditional = true;
  int64_t frames = 0;  // 0: an image; F > 0: a video of F frames (prompt ends in <vi_start>)
  // false recompute every step from scratch; only to check the caches against.
  bool llm_cache = true;
  bool depth_cache = true;
  // On CUDA, capture one image position (LLM step, depth steps, CFG, sampling, next input)
  // as a graph and replay it (StepGraph); needs both caches. Ignored elsewhere.
  bool cuda_graphs = true;
  // Fill ImageGenerator::times() (waits for the device after every step; benchmarks only).
  bool profile = false;
  void validate() const;
};

// Seconds spent per part, for benchmarks. Replayed CUDA graphs run the depth transformer
// and the LLM step together: their time is `graph`.
struct GenerationTimes {
  double prefill = 0, llm = 0, depth = 0, graph = 0, decode = 0;
  int64_t llm_tokens = 0;  // positions the LLM processed, prefill included, all rows
};

// One generation in progress: the prompts are prefilled on construction, then each step()
// samples the D codes of the next image position and, unless it was the last, runs the LLM
// on their embedding. With both caches every step is static: the same operators on the
// same shapes and buffers at every position, positions kept on the device, no host
// synchronisation (what `vilau bench generate` checks, and what a CUDA graph replays).
class ImageSession {
 public:
  // As ImageGenerator::generate_codes takes them; `model`, `generator` and `times` must
  // outlive the session.
  ImageSession(VilaUImpl& model, const std::vector<std::vector<int64_t>>& cond,
               const std::vector<int64_t>& uncond, const ImageOptions& options,
               at::Generator& generator, GenerationTimes& times);
  ~ImageSession();

  int64_t positions() const { return positions_; }
  int64_t position() const { return position_; }  // steps taken so far
  bool done() const { return position_ == positions_; }
  void step();
  // Codes [N, positions, D] (int64, on the model's device); complete once done().
  const at::Tensor& codes() const { return codes_; }

 private:
  void sample_position();  // hidden_ -> chosen_ and its column of codes_
  void advance_llm();      // chosen_ -> the next hidden_

  VilaUImpl& model_;
  ImageOptions options_;
  at::Generator& generator_;
  GenerationTimes& times_;
  int64_t n_ = 0, batch_ = 0, positions_ = 0, position_ = 0;
  std::unique_ptr<LlmSequence> llm_;
  DepthKvCache depth_cache_;
  at::Tensor hidden_;    // [rows, H]: the state that predicts the next position
  at::Tensor chosen_;    // [N, D]: the codes just sampled
  at::Tensor code_sum_;  // [rows, C]: the sum of their embeddings
  at::Tensor codes_;     // [N, positions, D]
  at::Tensor column_;    // [1] int64: position_ on the device
  std::unique_ptr<StepGraph> graph_;
};

class ImageGenerator {
 public:
  explicit ImageGenerator(VilaU model);

  // cond: the conditional prompts' ids, one row per wanted output; uncond: the
  // unconditional prompt's ids. Returns codes [N, h, w, D], or [N, F, h, w, D] for videos.
  at::Tensor generate_codes(const std::vector<std::vector<int64_t>>& cond,
                            const std::vector<int64_t>& uncond, const ImageOptions& options,
                            at::Generator& generator);
  // Codes as generate_codes returns them -> RGB uint8 [..., S, S, 3] on the CPU, every
  // image (frame) decoded in batches of at most `batch`.
  at::Tensor decode(const at::Tensor& codes, int64_t batch = 16);

  const GenerationTimes& times() const { return times_; }
  void reset_times() { times_ = {}; }

 private:
  VilaU model_;
  GenerationTimes times_;
};

// The conditional prompt ids for `prompt` (image or video) and the unconditional ones.
std::vector<int64_t> generation_prompt_ids(const Tokenizer& tokenizer, const std::string& prompt,
                                           bool video);
std::vector<int64_t> unconditional_prompt_ids(const Tokenizer& tokenizer, bool video);

}  // namespace vilau
