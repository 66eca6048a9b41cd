// Test fixture: a seeded random model in the official folder layout, plus an input image,
// for the CLI tests. Usage: make_tiny_checkpoint PRESET.yaml OUT_DIR
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>

#include "vilau/config.h"
#include "vilau/io/image.h"
#include "vilau/model/official_checkpoint.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: make_tiny_checkpoint PRESET.yaml OUT_DIR\n");
    return 2;
  }
  const vilau::ModelConfig config = *vilau::load_run_config(argv[1]).model;
  torch::manual_seed(7);
  std::map<std::string, at::Tensor> weights;
  for (const vilau::ExpectedTensor& t : vilau::expected_tensors(config)) {
    weights[t.name] = (torch::randn(t.shape) * 0.05).to(torch::kBFloat16);
  }
  vilau::export_official(argv[2], config, weights);
  const int64_t s = config.vision_tower.vision.image_size;
  vilau::io::write_image((std::filesystem::path(argv[2]) / "input.png").string(),
                         torch::randint(0, 256, {s, s, 3}, torch::kUInt8));
  std::printf("wrote %s\n", argv[2]);
  return 0;
}
