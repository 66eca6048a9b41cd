#pragma once
// The demo's deterministic metrics: a pixel-statistics reader for pictures of the synthetic
// world (no learned model, so scores are reproducible and cannot be gamed by the model
// under test), exact-match VQA scoring and PSNR.
#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "vilau/eval/synthetic_world.h"

namespace vilau::eval {

struct ShapeReading {
  bool found = false;  // false when too few pixels stand out from the background
  std::string colour;
  double colour_distance = 0;  // RGB distance from the foreground's median to that colour
  std::string shape;
  double fill_ratio = 0;    // foreground pixels / bounding-box pixels
  double aspect_ratio = 0;  // bounding-box width / height
  double top_fraction = 0;  // share of the foreground in the upper half of its box
  std::string position;
  double centroid_x = 0, centroid_y = 0;  // as fractions of the width and the height
  int foreground_pixels = 0;
};

// Reads the largest shape of an RGB uint8 [H, W, 3] picture against `world`'s vocabulary:
// background = per-channel median of the border, foreground = the largest connected region
// further from it than half the picture's contrast; then nearest palette colour, shape from
// fill ratio and top-heaviness, position from the centroid. ShapeError for other tensors.
ShapeReading read_shape(const at::Tensor& rgb, const World& world);

struct SynthMetrics {
  double colour_accuracy = 0;
  double shape_accuracy = 0;
  double both_accuracy = 0;
  double position_accuracy = 0;  // over the prompts that name a position
  int count = 0;
  std::vector<std::string> missing;  // prompt ids without a picture; they count as wrong
};

// Reads `images_dir`/<id>.png for every prompt.
SynthMetrics evaluate_synth_images(const World& world, const std::vector<EvalPrompt>& prompts,
                                   const std::string& images_dir);

// Lowercase, punctuation dropped, whitespace runs collapsed and trimmed.
std::string normalize_answer(std::string_view answer);

struct VqaScore {
  double accuracy = 0;
  std::map<std::string, double> by_kind;
  int count = 0;
  std::vector<std::string> missing;  // question ids without an answer; they count as wrong
};

// Exact match of normalised answers; `answers` maps question ids to answers.
VqaScore vqa_accuracy(const std::map<std::string, std::string>& answers,
                      const std::vector<EvalQuestion>& questions);

// Self-verification: answers[k][q] is candidate k's answer to question q, expected[q] the
// answer the prompt implies. Per candidate, how many answers match (normalised exact
// match). ShapeError when a candidate's answers do not line up with `expected`.
std::vector<int> agreement(const std::vector<std::vector<std::string>>& answers,
                           const std::vector<std::string>& expected);

// answers.jsonl: {"id": ..., "answer": ...} per line.
std::map<std::string, std::string> read_answers(const std::string& path);

// PSNR in dB of two uint8 pictures of one shape, peak 255; +infinity when they are
// identical. ShapeError when shapes or dtypes differ.
double psnr(const at::Tensor& a, const at::Tensor& b);

}  // namespace vilau::eval
