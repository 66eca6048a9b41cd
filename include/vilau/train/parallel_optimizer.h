#pragma once
// One optimisation step for a set of trainable parameters, however the run is spread:
// gradients combined across ranks (DDP or ZeRO-2), the global norm clipped, NaN/Inf steps
// skipped, AdamW on fp32 master weights (this rank's shard under ZeRO-1/2), and the new
// weights written back into the parameters in their own dtype (bf16 on GPU).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "vilau/dist/data_parallel.h"
#include "vilau/dist/process_group.h"
#include "vilau/train/config.h"
#include "vilau/train/optimizer.h"

namespace vilau {

class ParallelOptimizer {
 public:
  // Parameters named "<module>.<...>"; the module picks the learning rate (OptimizerConfig::
  // lr_of), and tensors of fewer than 2 dimensions (biases, norms) get no weight decay.
  ParallelOptimizer(std::vector<std::pair<std::string, at::Tensor>> params,
                    const OptimizerConfig& optimizer, const DistributedConfig& distributed,
                    const ProcessGroup& group, at::Device device);

  // Before the backward of a step's last micro-batch: lets DDP reduce during backward.
  void begin_last_micro_batch() { sync_->begin_sync(); }

  struct Step {
    double grad_norm = 0.0;  // before clipping
    bool skipped = false;    // a NaN/Inf loss or gradient: no update
  };
  // Every rank must call it, with its own view of whether its loss was finite.
  Step step(double lr_factor, bool loss_finite);

  int64_t parameters() const { return layout_.numel; }
  const std::vector<ParamGroup>& groups() const { return optimizer_->groups(); }

  // The full optimizer state (gathered from every shard), identical on every rank; all
  // ranks must call it. load_state takes it back, on any world size.
  std::map<std::string, at::Tensor> state() const;
  void load_state(const std::map<std::string, at::Tensor>& state);

 private:
  at::Tensor full(const at::Tensor& shard) const;

  const ProcessGroup& group_;
  OptimizerConfig config_;
  int64_t zero_stage_;
  FlatLayout layout_;
  int64_t shard_begin_ = 0;
  std::unique_ptr<GradientSync> sync_;
  std::unique_ptr<ShardedAdamW> optimizer_;
};

}  // namespace vilau
