#pragma once
// Evaluation-style answering: many single-image questions, each in a fresh one-turn
// conversation (SPEC §4.3), answered a batch at a time with a progress bar. Shared by
// `vilau chat --questions` and `vilau eval vqa --model`.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "vilau/infer/runtime.h"
#include "vilau/infer/text_generation.h"

namespace vilau {

// One image placeholder as the official inference writes it, or wrapped in
// <im_start>/<im_end> as single-image SFT data is (for models trained only on that form).
std::string image_placeholder(bool wrap);

struct ImageQuestion {
  std::string image;    // a path
  std::string message;  // the user's message after the image, instructions included
};

struct AnsweringOptions {
  TextOptions text;
  int64_t batch = 1;  // questions answered together (left-padded prompts, one prefill)
  bool wrap_images = false;
  uint64_t seed = 0;  // each batch samples with seed + the index of its first question
  bool progress = true;
};

// Receives each answer, in order, as soon as its batch is done, so that a caller can save it
// before the next batch starts; `index` is the question's position in the list.
using AnswerSink = std::function<void(size_t index, const TextAnswer& answer)>;

// IoError naming the image for one that cannot be read (before the batch is run); ConfigError
// for a batch below 1; ShapeError when a prompt does not fit the context.
void answer_image_questions(InferenceModel& model, const std::vector<ImageQuestion>& questions,
                            const AnsweringOptions& options, const AnswerSink& sink);

}  // namespace vilau
