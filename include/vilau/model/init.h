#pragma once
// A freshly initialised VILA-U model, the starting point for training from scratch.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>

#include "vilau/model/config.h"

namespace vilau {

// Builds every module of `config` (LLaMA, vision tower, depth transformer, projector) with
// its own initialisation under `seed` and returns all tensors under our names ("llm.",
// "vision_tower.", "mm_projector."), in bf16 like the released checkpoints. Refuses with
// a clear error when the fp32 modules would not fit in this machine's memory.
std::map<std::string, at::Tensor> init_weights(const ModelConfig& config, uint64_t seed);

}  // namespace vilau
