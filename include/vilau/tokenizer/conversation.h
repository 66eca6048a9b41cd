#pragma once
// VILA-U's conversation template, vicuna_v1 (SeparatorStyle.TWO): the system prompt, then
// "USER: msg ASSISTANT: answer</s>" per turn. A turn with an empty message renders as
// "ROLE:" with no space, which is how the unconditional CFG prompt comes out as
// "...USER:ASSISTANT: <im_start>" (SPEC §3.4, §4.1, §4.3).
#include <cstdint>
#include <string>
#include <vector>

namespace vilau {

class Tokenizer;

inline constexpr const char* kSystemPrompt =
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the user's questions.";

struct Turn {
  std::string user;
  std::string assistant;  // empty in the last turn of a prompt: the model answers
};

// The rendered conversation; the last turn with no answer ends in "ASSISTANT:". Messages
// are used as given (training data goes through this).
std::string render_chat(const std::vector<Turn>& turns);

// Python's str.strip(): removes leading and trailing characters for which str.isspace()
// holds, Unicode ones included (U+00A0, U+3000, ...), from UTF-8 text.
std::string python_strip(const std::string& text);

// Inference prompts, as the official tokenize_conversation builds them: every message is
// stripped with python_strip, then rendered (docs/tokenizer.md, "Prompts").
std::string inference_prompt(const std::vector<Turn>& turns);
// "<image>\n" per image before the question (no <im_start>/<im_end> at inference); the
// whole message is stripped, so an empty question leaves "<image>".
std::string understanding_prompt(const std::string& question, int64_t images = 1);
// A video is num_frames images; the same prompt shape as several images.
std::string video_prompt(const std::string& question, int64_t frames);
// Generation prompts: the user's prompt is stripped; an empty prompt gives the
// unconditional (CFG) prompt.
std::string text_to_image_prompt(const std::string& prompt);
std::string text_to_image_unconditional_prompt();
std::string text_to_video_prompt(const std::string& prompt);

// A training sample: ids with kImageTokenIndex placeholders, and labels that are
// kIgnoreIndex everywhere but the assistant answers (and their "</s>").
struct TrainingSample {
  std::vector<int64_t> input_ids;
  std::vector<int64_t> labels;
  // Empty when the rounds add up to the sequence; otherwise why not (every label is masked).
  std::string rounds_mismatch;
};

// Masks like the official preprocess_v1 (LLaVA's), length arithmetic included, so that
// label positions match the official pipeline token for token. Each turn must have an
// answer. When the rounds do not add up to the whole sequence, every label is ignored,
// as the official code does, and rounds_mismatch says so.
TrainingSample make_training_sample(const Tokenizer& tokenizer, const std::vector<Turn>& turns);

// Text-to-image (video) training pairs: the caption as the user turn and
// "<im_start><image><im_end>" (or "<vi_start>" + "<image>" x frames + "<vi_end>") as the
// answer. An empty caption becomes "An image.", as in the official dataset.
TrainingSample make_generation_sample(const Tokenizer& tokenizer, const std::string& caption,
                                      int64_t video_frames = 0);

// The same answer after the unconditional prompt that classifier-free guidance runs
// (text_to_image_unconditional_prompt: an empty user turn), labelled from <im_start> or
// <vi_start> on.
TrainingSample make_unconditional_generation_sample(const Tokenizer& tokenizer,
                                                    int64_t video_frames = 0);

// Which <image> placeholders of a sample are generation targets, in order: their codes
// become visual labels, the others are ignored. The official rule (vila_u_arch.py,
// mm_use_vi_start_end): the sequence has an image third from the end and <im_start> is in
// the labels just before that image, or ids[-10:-3] are all images (a generated video).
std::vector<bool> generation_targets(const TrainingSample& sample, int64_t im_start_id);

}  // namespace vilau
