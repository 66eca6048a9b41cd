#pragma once
// `vilau plan`: the bytes one rank holds while training the multimodal stages, computed from
// the real modules built on the meta device (shapes and dtypes, no storage) and the sharding
// layout of docs/training.md ("Memory per rank"). Activations are an estimate from the
// layer shapes; everything else is exact up to allocator rounding.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "vilau/model/config.h"
#include "vilau/model/vila_u.h"

namespace vilau {

// Builds VilaU(config) with every parameter and buffer on the meta device in `dtype`:
// nothing is allocated, so a 7B model builds in milliseconds.
VilaU build_vila_u_on_meta(const ModelConfig& config, at::ScalarType dtype);

struct PlanOptions {
  int64_t world_size = 1;
  int64_t zero_stage = 0;  // 0..3
  int64_t micro_batch = 1;
  int64_t seq_len = 2048;
  bool activation_checkpointing = false;
  // Top-level modules that train (llm, mm_projector, depth_transformer); empty: all three,
  // the multimodal stages' default.
  std::vector<std::string> trainable;
  at::ScalarType dtype = at::kBFloat16;  // parameters and activations (masters are fp32)
  double bucket_mb = 25;                 // train.distributed.bucket_mb
  // Positions per sample that are image/video generation targets (the depth transformer
  // runs there, lm_head elsewhere); -1: the worst case of the two heads.
  int64_t visual_positions = -1;

  // ConfigError naming the option and what was expected.
  void validate() const;
};

// One FSDP unit (ZeRO-3) or gradient bucket (ZeRO 0-2): trainable parameters, their numel.
struct PlanUnit {
  std::string name;  // module path or "bucket N"
  int64_t numel = 0;
};

struct ModulePlanCount {
  std::string name;  // top-level module: vision_tower, mm_projector, llm, depth_transformer
  int64_t parameters = 0;
  int64_t buffers = 0;
  bool trainable = false;
};

struct ActivationEstimate {
  int64_t checkpointed_inputs = 0;  // layer inputs kept between forward and backward
  int64_t llm_layers = 0;           // saved intermediates of the layers not checkpointed
  int64_t llm_layer_backward = 0;   // one layer's intermediates + gradients at its backward
  int64_t heads = 0;                // lm_head / depth transformer, forward + their backward
  int64_t whole_step = 0;           // embeddings, mask, rotary tables, final norm
  int64_t peak = 0;                 // what the total counts
  int64_t visual_positions = 0;     // per sample, as used
};

struct MemoryPlan {
  PlanOptions options;
  std::string model_name;
  std::vector<ModulePlanCount> modules;
  int64_t trainable_parameters = 0;
  int64_t frozen_parameters = 0;
  int64_t buffer_elements = 0;
  std::vector<PlanUnit> units;  // ZeRO-3: FSDP units; else gradient buckets
  PlanUnit largest_unit;        // ZeRO-3: largest non-root unit; else largest bucket
  int64_t root_unit = 0;        // ZeRO-3 root unit numel

  // Bytes per rank.
  int64_t parameters = 0;
  int64_t gradients = 0;  // fp32 gradient (full or shard) + buckets in flight + transient .grad
  int64_t optimizer = 0;  // fp32 master + Adam m and v
  int64_t gathered = 0;   // ZeRO-3: gathered parameters and their unsharded gradients
  int64_t buffers = 0;
  ActivationEstimate activations;
  int64_t total = 0;
};

// A plan for training `config` as `options` says. The modules are built on the meta device.
MemoryPlan plan_memory(const ModelConfig& config, const PlanOptions& options);

// A GPU the plan checks against; fits when total <= kPlanHeadroom * capacity.
struct GpuCapacity {
  const char* name;
  int64_t bytes;
};
const std::vector<GpuCapacity>& plan_gpus();
// The share of a GPU's memory a plan may use: the rest is left to the CUDA context, NCCL
// buffers and allocator fragmentation.
constexpr double kPlanHeadroom = 0.9;

nlohmann::ordered_json plan_json(const MemoryPlan& plan);

}  // namespace vilau
