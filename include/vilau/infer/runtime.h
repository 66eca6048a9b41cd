#pragma once
// What every inference command does first: pick the device and dtype, and load the model
// with its tokenizer.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "vilau/model/vila_u.h"
#include "vilau/tokenizer/tokenizer.h"

namespace vilau {

// "cpu", "cuda" or "cuda:N"; a plain "cuda" is GPU LOCAL_RANK (SLURM_LOCALID; 0 when unset),
// so one command line serves every process of a torchrun or srun launch. ConfigError for an
// unknown name, DeviceError naming --device when CUDA is asked for but not available.
at::Device parse_device(const std::string& name);
// "bf16", "fp16", "fp32" or "auto" (bf16 on a GPU, fp32 on the CPU); ConfigError otherwise.
at::ScalarType parse_dtype(const std::string& name, at::Device device);
const char* dtype_name(at::ScalarType dtype);

struct InferenceModel {
  VilaU model{nullptr};
  Tokenizer tokenizer;
};
// An official (or `vilau init`) folder: the model in eval mode and llm/'s tokenizer.
InferenceModel load_inference_model(const std::string& dir, at::Device device,
                                    at::ScalarType dtype);

// Only the vision tower of a checkpoint folder, in fp32 eval mode: what tower commands need,
// without reading the LLM's weights.
VisionTower load_vision_tower(const std::string& dir, at::Device device);

// A randomly initialised model built directly in `dtype` (for benchmarks of presets).
VilaU random_vila_u(const ModelConfig& config, at::Device device, at::ScalarType dtype,
                    uint64_t seed);

}  // namespace vilau
