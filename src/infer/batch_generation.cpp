#include "vilau/infer/batch_generation.h"

#include <torch/torch.h>

#include <cstdio>
#include <filesystem>

#include "vilau/core/progress.h"
#include "vilau/infer/outputs.h"
#include "vilau/infer/sampling.h"
#include "vilau/io/image.h"

namespace fs = std::filesystem;

namespace vilau {

std::string sample_stem(const std::string& id, int64_t k, int64_t per_prompt) {
  return per_prompt == 1 ? id : id + "_" + std::to_string(k);
}

namespace {

bool sample_done(const fs::path& dir, const std::string& id, int64_t per_prompt, bool video) {
  for (int64_t k = 0; k < per_prompt; ++k) {
    const std::string stem = sample_stem(id, k, per_prompt);
    if (!fs::exists(dir / (stem + ".png")) || (video && !fs::exists(dir / (stem + ".avi")))) {
      return false;
    }
  }
  return true;
}

}  // namespace

std::string numbered_stem(const std::string& stem, int64_t k, int width) {
  char digits[32];
  std::snprintf(digits, sizeof(digits), "%0*lld", width, static_cast<long long>(k));
  return stem + digits;
}

std::vector<std::string> write_sample(const std::string& dir, const std::string& stem,
                                      const at::Tensor& pixels, double fps, bool frames_too) {
  std::vector<std::string> files;
  const auto save = [&](const std::string& name, const at::Tensor& rgb) {
    io::write_image((fs::path(dir) / name).string(), rgb);
    files.push_back(name);
  };
  if (pixels.dim() == 3) {
    save(stem + ".png", pixels);
    return files;
  }
  for (int64_t f = 0; frames_too && f < pixels.size(0); ++f) {
    save(numbered_stem(stem + "_frame_", f, 2) + ".png", pixels[f]);
  }
  save(stem + (frames_too ? "_strip.png" : ".png"), image_grid(pixels, pixels.size(0)));
  write_video((fs::path(dir) / (stem + ".avi")).string(), pixels, fps);
  files.push_back(stem + ".avi");
  return files;
}

PromptFileSummary generate_prompt_file(ImageGenerator& generator, const Tokenizer& tokenizer,
                                       at::Device device, const std::vector<PromptEntry>& entries,
                                       const std::string& out, const PromptFileOptions& options,
                                       const Shard& shard) {
  const bool video = options.image.frames > 0;
  PromptFileSummary summary;
  std::vector<int64_t> todo;
  for (const int64_t i : shard_indices(static_cast<int64_t>(entries.size()), shard)) {
    if (sample_done(out, entries[i].id, options.per_prompt, video)) {
      ++summary.skipped;
    } else {
      todo.push_back(i);
    }
  }
  const std::vector<int64_t> uncond = unconditional_prompt_ids(tokenizer, video);
  fs::create_directories(out);
  ProgressBar bar("generate rank " + std::to_string(shard.rank), static_cast<int64_t>(todo.size()),
                  "prompt", 0, options.progress);
  for (size_t start = 0; start < todo.size(); start += options.batch) {
    const size_t end = std::min(todo.size(), start + static_cast<size_t>(options.batch));
    std::vector<std::vector<int64_t>> cond;
    for (size_t j = start; j < end; ++j) {
      cond.insert(cond.end(), options.per_prompt,
                  generation_prompt_ids(tokenizer, entries[todo[j]].prompt, video));
    }
    at::Generator rng = make_generator(device, options.seed + todo[start]);
    const at::Tensor pixels =
        generator.decode(generator.generate_codes(cond, uncond, options.image, rng));
    for (size_t j = start; j < end; ++j) {
      for (int64_t k = 0; k < options.per_prompt; ++k) {
        const auto row = static_cast<int64_t>(j - start) * options.per_prompt + k;
        write_sample(out, sample_stem(entries[todo[j]].id, k, options.per_prompt), pixels[row],
                     options.fps, false);
      }
    }
    bar.update(static_cast<int64_t>(end));
  }
  bar.finish();
  summary.generated = static_cast<int64_t>(todo.size());
  return summary;
}

}  // namespace vilau
