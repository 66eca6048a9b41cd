// Test fixture: seeded FID Inception weights (as the unit tests draw them), so that CLI tests
// can run `vilau eval mjhq|tower|fid` end to end without the 90 MB public file.
// Usage: make_random_inception OUT.safetensors
#include <torch/torch.h>

#include <cstdio>

#include "../unit/seeded_inception.h"
#include "vilau/eval/inception.h"
#include "vilau/io/safetensors.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_random_inception OUT.safetensors\n");
    return 2;
  }
  vilau::eval::FidInception model;
  vilau::testing::fill_seeded(model);
  vilau::io::NamedTensors tensors;
  for (const auto& [name, t] : model.named_tensors()) {
    tensors.emplace_back(name, t);
  }
  vilau::io::save_safetensors(argv[1], tensors);
  std::printf("wrote %s\n", argv[1]);
  return 0;
}
