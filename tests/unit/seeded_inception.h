#pragma once
// FID Inception weights drawn as tests/reference/make_fid_fixtures.py draws them, shared by
// the unit tests and the CLI tests' weight file (tools/make_random_inception.cpp).
#include <torch/torch.h>

#include <cmath>
#include <string>

#include "vilau/eval/inception.h"

namespace vilau::testing {

inline bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The reference's draw: tensor k of the sorted names after manual_seed(k), scaled by kind.
inline void fill_seeded(eval::FidInception& model) {
  torch::NoGradGuard no_grad;
  int64_t k = 0;
  for (auto& [name, t] : model.named_tensors()) {  // std::map: sorted as Python sorts
    torch::manual_seed(k++);
    const at::IntArrayRef s = t.sizes();
    at::Tensor value;
    if (ends_with(name, "conv.weight")) {
      value = torch::randn(s) * std::sqrt(2.0 / static_cast<double>(s[1] * s[2] * s[3]));
    } else if (ends_with(name, "running_var")) {
      value = torch::rand(s) + 0.5;
    } else if (ends_with(name, "bn.weight")) {
      value = torch::randn(s) * 0.2 + 1.0;
    } else {
      value = torch::randn(s) * 0.1;
    }
    t.copy_(value);
  }
}

}  // namespace vilau::testing
