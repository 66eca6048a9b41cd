#pragma once
// Generation over a prompt file, as evaluation runs it: one output file per prompt id, every
// process taking its shard, prompts whose outputs exist skipped, so an interrupted or
// multi-node run resumes where it stopped and draws what an uninterrupted one would have.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "vilau/infer/image_generation.h"
#include "vilau/infer/prompt_file.h"

namespace vilau {

class Tokenizer;

// stem + k zero-padded to `width` digits: "sample_007", "clip_frame_03".
std::string numbered_stem(const std::string& stem, int64_t k, int width);

// The stem of prompt `id`'s sample k of `per_prompt`: ID, or ID_K when there are several.
std::string sample_stem(const std::string& id, int64_t k, int64_t per_prompt);

// One sample (an image [S, S, 3] or frames [F, S, S, 3]) under `stem` in `dir`: stem.png,
// or for a video stem_frame_NN.png, stem_strip.png and stem.avi. Without `frames_too` batch
// evaluation keeps only the strip, as stem.png, and the video. Returns the file names.
std::vector<std::string> write_sample(const std::string& dir, const std::string& stem,
                                      const at::Tensor& pixels, double fps, bool frames_too);

struct PromptFileOptions {
  ImageOptions image;
  int64_t batch = 1;       // prompts generated together
  int64_t per_prompt = 1;  // samples per prompt: ID.png, or ID_K.png when more than one
  uint64_t seed = 0;
  double fps = 8.0;
  bool progress = true;
};

struct PromptFileSummary {
  int64_t generated = 0;
  int64_t skipped = 0;  // already on disk
};

// Generates entries[i] for the i of `shard` into `out`. Each batch is seeded by its first
// prompt's index, so with batch 1 every image is independent of sharding and resumption.
PromptFileSummary generate_prompt_file(ImageGenerator& generator, const Tokenizer& tokenizer,
                                       at::Device device, const std::vector<PromptEntry>& entries,
                                       const std::string& out, const PromptFileOptions& options,
                                       const Shard& shard);

}  // namespace vilau
