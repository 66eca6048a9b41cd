#include "vilau/infer/text_generation.h"

#include <torch/torch.h>

#include <algorithm>

#include "vilau/core/error.h"
#include "vilau/infer/batching.h"
#include "vilau/tokenizer/conversation.h"
#include "vilau/tokenizer/detokenizer.h"
#include "vilau/tokenizer/tokenizer.h"

namespace vilau {

namespace {

struct RowState {
  explicit RowState(const Tokenizer& tokenizer) : detokenizer(tokenizer, true) {}
  Detokenizer detokenizer;
  std::string text;  // the detokenizer's text, cut at a stop string
  size_t emitted = 0;
  bool done = false;
  StopReason stop = StopReason::length;
};

// Cuts `text` before the first stop string; true when one was found.
bool cut_at_stop(std::string& text, const std::vector<std::string>& stops) {
  size_t cut = std::string::npos;
  for (const std::string& s : stops) {
    if (!s.empty()) cut = std::min(cut, text.find(s));
  }
  if (cut == std::string::npos) return false;
  text.resize(cut);
  return true;
}

// How much of `text` can be shown without revealing the start of a stop string that the
// next tokens may complete, or half of a multi-byte character.
size_t printable_length(const std::string& text, const std::vector<std::string>& stops) {
  size_t keep = text.size();
  for (const std::string& s : stops) {
    for (size_t n = std::min(s.size() - 1, text.size()); n > 0; --n) {
      if (text.compare(text.size() - n, n, s, 0, n) == 0) {
        keep = std::min(keep, text.size() - n);
        break;
      }
    }
  }
  const size_t bad = text.rfind(kReplacementCharacter);
  if (bad != std::string::npos && bad + kReplacementCharacter.size() == text.size()) {
    keep = std::min(keep, bad);
  }
  return keep;
}

}  // namespace

const char* stop_reason_name(StopReason reason) {
  switch (reason) {
    case StopReason::eos:
      return "eos";
    case StopReason::stop_string:
      return "stop_string";
    case StopReason::length:
      break;
  }
  return "length";
}

int64_t context_length(const ModelConfig& config) {
  return static_cast<int64_t>(static_cast<double>(config.llm.max_position_embeddings) *
                              config.llm.rope_scaling_factor);
}

int64_t expanded_length(const std::vector<int64_t>& ids, int64_t tokens_per_image) {
  const auto images = std::count(ids.begin(), ids.end(), kImageTokenIndex);
  return static_cast<int64_t>(ids.size()) + images * (tokens_per_image - 1);
}

TokenDecoder::TokenDecoder(VilaUImpl& model, const ExpandedInputs& in, int64_t budget,
                           const SamplerConfig& sampler, at::Generator& generator, bool kv_cache,
                           bool cuda_graphs)
    : model_(model), sampler_(sampler), generator_(generator) {
  torch::NoGradGuard no_grad;
  LlamaForCausalLMImpl& llm = *model_.llm;
  const at::Tensor weight = llm.model->embed_tokens->weight;
  llm_ = std::make_unique<LlmSequence>(llm, in, budget, kv_cache);
  tokens_ = sample_tokens(llm.logits(llm_->prefilled()), sampler_, generator_);
  graph_ = std::make_unique<StepGraph>(cuda_graphs && kv_cache, weight.device(), generator_);
}

TokenDecoder::~TokenDecoder() = default;

void TokenDecoder::step() {
  torch::NoGradGuard no_grad;
  if (graph_->run([this] { next(); })) llm_->count_replayed_step();
}

void TokenDecoder::next() {
  LlamaForCausalLMImpl& llm = *model_.llm;
  tokens_.copy_(sample_tokens(llm.logits(llm_->step(llm.embed(tokens_))), sampler_, generator_));
}

TextGenerator::TextGenerator(VilaU model, const Tokenizer& tokenizer)
    : model_(std::move(model)), tokenizer_(tokenizer) {}

std::vector<TextAnswer> TextGenerator::generate(const std::vector<std::vector<int64_t>>& prompts,
                                                const at::Tensor& images,
                                                const TextOptions& options,
                                                at::Generator& generator,
                                                const TextStream& stream) {
  options.sampler.validate("text sampler");
  config_check(options.max_new_tokens > 0, "max_new_tokens", "a positive count",
               std::to_string(options.max_new_tokens));
  if (prompts.empty()) return {};
  torch::NoGradGuard no_grad;
  const int64_t longest = check_context(prompts, *model_, 1, "understanding prompt");
  const int64_t budget =
      std::min(options.max_new_tokens, context_length(model_->config()) - longest);

  LlamaForCausalLMImpl& llm = *model_->llm;
  const at::Tensor weight = llm.model->embed_tokens->weight;
  MultimodalBatch batch = left_padded_batch(prompts, tokenizer_.pad_id(), weight.device());
  if (images.defined()) {
    (images.scalar_type() == at::kLong ? batch.image_codes : batch.images) = images;
  }
  const ExpandedInputs in = model_->expand(batch, Padding::left);
  const int64_t rows = in.inputs_embeds.size(0);
  TokenDecoder decoder(*model_, in, budget, options.sampler, generator, options.kv_cache,
                       options.cuda_graphs);

  std::vector<RowState> states;
  states.reserve(prompts.size());
  for (size_t b = 0; b < prompts.size(); ++b) states.emplace_back(tokenizer_);
  const int64_t eos = tokenizer_.eos_id();
  for (int64_t step = 0; step < budget; ++step) {
    // The one wait per token: the host needs the tokens for EOS, stop strings and streaming.
    const at::Tensor next = decoder.tokens().cpu();
    const int64_t* next_ids = next.data_ptr<int64_t>();
    bool all_done = true;
    for (int64_t b = 0; b < rows; ++b) {
      RowState& s = states[b];
      if (s.done) continue;
      const int64_t token = next_ids[b];
      if (token == eos) {
        s.text = s.detokenizer.finish();
        s.done = true;
        s.stop = StopReason::eos;
      } else {
        s.text = s.detokenizer.push(token);
        if (cut_at_stop(s.text, options.stop_strings)) {
          s.done = true;
          s.stop = StopReason::stop_string;
        }
      }
      const size_t shown = s.done ? s.text.size() : printable_length(s.text, options.stop_strings);
      if (stream && shown > s.emitted) {
        stream(b, s.text.substr(s.emitted, shown - s.emitted));
        s.emitted = shown;
      }
      all_done = all_done && s.done;
    }
    if (all_done || step + 1 == budget) break;
    // Finished rows keep running on their last token; nothing reads what they produce.
    decoder.step();
  }

  std::vector<TextAnswer> answers;
  for (RowState& s : states) {
    if (!s.done) s.text = s.detokenizer.finish();
    if (stream && !s.done && s.text.size() > s.emitted) {
      stream(static_cast<int64_t>(answers.size()), s.text.substr(s.emitted));
    }
    // As the official generate_content returns it: decoded, then str.strip()ped.
    answers.push_back({s.detokenizer.tokens(), python_strip(s.text), s.stop});
  }
  return answers;
}

}  // namespace vilau
