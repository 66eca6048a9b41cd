#pragma once
// A small synthetic training set written by the tests themselves (solid-colour images with
// captions and questions), and the tiny run configs pointed at it.
#include <torch/torch.h>

#include <fstream>
#include <string>
#include <vector>

#include "test_util.h"
#include "vilau/config.h"
#include "vilau/io/image.h"

namespace vilau::testing {

inline void write_training_set(const std::string& dir, int64_t count = 16) {
  const std::vector<std::pair<std::string, std::vector<int64_t>>> colours = {
      {"red", {220, 30, 30}},     {"green", {30, 200, 40}},   {"blue", {30, 40, 220}},
      {"yellow", {230, 220, 40}}, {"white", {240, 240, 240}}, {"black", {10, 10, 10}}};
  std::ofstream pairs(dir + "/pairs.jsonl"), vqa(dir + "/vqa.jsonl");
  for (int64_t i = 0; i < count; ++i) {
    const auto& [name, rgb] = colours[static_cast<size_t>(i) % colours.size()];
    at::Tensor image = at::tensor(rgb, at::kByte).view({1, 1, 3}).repeat({32, 32, 1});
    // A darker square whose place varies, so that images of one colour differ.
    const int64_t x = (i * 5) % 20, y = (i * 3) % 20;
    image.slice(0, y, y + 10).slice(1, x, x + 10).div_(2, "floor");
    const std::string file = "img" + std::to_string(i) + ".png";
    io::write_image(dir + "/" + file, image);
    pairs << R"({"image": ")" << file << R"(", "caption": "a )" << name << R"( picture"})"
          << "\n";
    vqa << R"({"image": ")" << file
        << R"(", "conversations": [{"from": "human", "value": "<image>\nWhat colour is it?"}, )"
        << R"({"from": "gpt", "value": ")" << name << R"("}]})"
        << "\n";
  }
}

// configs/train/tiny-<stage>.yaml with the run folder, tokenizer and data set to the test's.
inline Config tiny_run(const std::string& stage, const std::string& dir,
                       std::vector<std::string> overrides = {}) {
  const std::string data = stage == "sft"
                               ? "path=" + dir + "/vqa.jsonl, format=llava, task=understanding"
                               : "path=" + dir + "/pairs.jsonl, format=captions, task=" +
                                     std::string(stage == "tower" ? "tower" : "t2i");
  std::vector<std::string> all = {"train.output_dir=" + dir + "/run",
                                  "train.tokenizer=" VILAU_TEST_DATA_DIR "/tokenizer",
                                  "data.datasets=[\"" + data + "\"]",
                                  // Dropout off: runs on different process layouts compare.
                                  "model.depth_transformer.resid_dropout=0"};
  all.insert(all.end(), overrides.begin(), overrides.end());
  return load_run_config(VILAU_SOURCE_DIR "/configs/train/tiny-" +
                             std::string(stage == "finetune" ? "pretrain" : stage) + ".yaml",
                         all);
}

}  // namespace vilau::testing
