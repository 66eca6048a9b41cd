#pragma once
// Metrics of a vision tower alone (docs/evaluation.md, "Tower"): how well its codes
// reconstruct pictures, and how well its SigLIP halves classify pictures zero-shot.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "vilau/vision/vision_tower.h"

namespace vilau {
class Tokenizer;
}

namespace vilau::eval {

struct ReconstructionResult {
  double psnr_db = 0;  // mean over pictures with a finite PSNR (identical ones have none)
  double ssim = 0;     // mean over all pictures
  int64_t count = 0;
};

// Encodes each picture to codes and decodes it back at the tower's resolution; the reference
// is the picture as the tower sees it (Pillow-bicubic resized, quantised to uint8 again).
// When `save_dir` is set, writes save_dir/inputs/<i>.png and save_dir/reconstructions/<i>.png
// (i the picture's index, zero-padded) so that rFID can compare the two folders.
ReconstructionResult evaluate_reconstruction(VisionTowerImpl& tower,
                                             const std::vector<std::string>& images, int64_t batch,
                                             const std::string& save_dir = {},
                                             bool progress = false);

struct LabelledImage {
  std::string image;
  std::string label;
};

// JSONL of {"image": path, "label": class name}; relative paths are taken from `image_root`
// (the file's folder when empty). FormatError naming file:line and the key.
std::vector<LabelledImage> read_labelled_images(const std::string& path,
                                                const std::string& image_root = {});

struct ZeroShotResult {
  double top1 = 0, top5 = 0;
  int64_t count = 0;
  std::map<std::string, double> per_class_top1;
};

// Scores each picture against `template` with "{}" replaced by every class name, with the
// tower's image and text embeddings (cosine similarity; the logit scale and bias do not
// change the ranking). `classes` must contain every label (ConfigError naming the label).
ZeroShotResult zero_shot_classify(VisionTowerImpl& tower, const Tokenizer& tokenizer,
                                  const std::vector<LabelledImage>& images,
                                  const std::vector<std::string>& classes,
                                  const std::string& prompt_template, int64_t batch,
                                  bool progress = false);

}  // namespace vilau::eval
