#pragma once
// Answers to understanding prompts (SPEC §4.3, §4.4): a batched prefill of left-padded
// prompts, then one token per step for every row with the LLM's KV cache, until each row
// meets EOS, its token limit or a stop string.
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "vilau/infer/llm_sequence.h"
#include "vilau/infer/sampling.h"
#include "vilau/infer/step_graph.h"
#include "vilau/model/vila_u.h"

namespace vilau {

class Tokenizer;

struct TextOptions {
  SamplerConfig sampler{0.9, 0, 0.6};
  int64_t max_new_tokens = 512;  // fewer when the context runs out first
  std::vector<std::string> stop_strings;
  // false recomputes the whole sequence at every step; only to check the cache against.
  bool kv_cache = true;
  // On CUDA, capture one token step (embed, LLM step, lm_head, sampling) as a graph and
  // replay it (StepGraph); needs the KV cache. Ignored elsewhere.
  bool cuda_graphs = true;
};

// Token-level decoding of understanding prompts, without text: the prefill on
// construction samples every row's first token, then each step() samples the next from
// tokens(). With the KV cache a step is static (same operators, shapes and buffers at
// every position, no host synchronisation); reading tokens() on the host is the one wait
// per token the caller makes, for streaming and stopping.
class TokenDecoder {
 public:
  // `in`: the expanded, left-padded prompts; `budget`: the most tokens step() will add.
  // `model` and `generator` must outlive the decoder.
  TokenDecoder(VilaUImpl& model, const ExpandedInputs& in, int64_t budget,
               const SamplerConfig& sampler, at::Generator& generator, bool kv_cache,
               bool cuda_graphs);
  ~TokenDecoder();

  const at::Tensor& tokens() const { return tokens_; }  // [B] int64, on the model's device
  void step();

 private:
  void next();

  VilaUImpl& model_;
  SamplerConfig sampler_;
  at::Generator& generator_;
  std::unique_ptr<LlmSequence> llm_;
  at::Tensor tokens_;
  std::unique_ptr<StepGraph> graph_;
};

enum class StopReason { eos, length, stop_string };
const char* stop_reason_name(StopReason reason);

struct TextAnswer {
  std::vector<int64_t> tokens;  // generated ids, EOS excluded
  std::string text;  // decoded without special tokens, cut before a stop string, python_strip()ped
  StopReason stop = StopReason::length;
};

// Receives each row's newly printable text as it is generated.
using TextStream = std::function<void(int64_t row, const std::string& piece)>;

class TextGenerator {
 public:
  // The tokenizer decodes the answers and finds stop strings; it must outlive the generator.
  TextGenerator(VilaU model, const Tokenizer& tokenizer);

  // prompts: token ids per row, each image a kImageTokenIndex placeholder; images: pixels
  // [P, 3, S, S] or codes [P, h, w, D] (int64) for the P placeholders in row order, undefined
  // when there are none. ShapeError when a prompt leaves no room in the context.
  std::vector<TextAnswer> generate(const std::vector<std::vector<int64_t>>& prompts,
                                   const at::Tensor& images, const TextOptions& options,
                                   at::Generator& generator, const TextStream& stream = {});

 private:
  VilaU model_;
  const Tokenizer& tokenizer_;
};

// The longest sequence the LLM takes: max_position_embeddings stretched by linear RoPE.
int64_t context_length(const ModelConfig& config);

// The prompt's length once each placeholder stands for tokens_per_image positions.
int64_t expanded_length(const std::vector<int64_t>& ids, int64_t tokens_per_image);

}  // namespace vilau
