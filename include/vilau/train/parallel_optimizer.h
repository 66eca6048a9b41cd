#pragma once
// One optimisation step for a set of trainable parameters, however the run is spread:
// gradients synchronised during backward (GradientSync: DDP, or reduce-scattered into this
// rank's shard under ZeRO-2), the global norm clipped, NaN/Inf steps skipped, AdamW on fp32
// master weights (this rank's shard under ZeRO-1/2), and the new weights written back into
// the parameters in their own dtype (bf16 on GPU), one bucket at a time.
//
// Its state is saved per rank: each rank writes only its shard, and an index records the
// flat layout, so a checkpoint loads on any world size and ZeRO stage (docs/training.md).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "vilau/dist/data_parallel.h"
#include "vilau/dist/flat_layout.h"
#include "vilau/dist/fully_sharded.h"
#include "vilau/dist/process_group.h"
#include "vilau/train/config.h"
#include "vilau/train/optimizer.h"

namespace vilau {

// The ZeRO-3 unit of a trainable parameter: "llm.model.layers.<i>" for a decoder layer,
// "depth_transformer.head_transformer.blocks.<i>" for a depth-transformer block,
// "mm_projector" for the projector, and "root" for everything else (embeddings, norms,
// heads, the depth transformer's outer layers), which stays gathered.
std::string fsdp_unit(const std::string& name);

class ParallelOptimizer {
 public:
  // Parameters named "<module>.<...>", in the order the forward uses them (registration
  // order); backward produces their gradients in about the reverse order, which is the
  // bucket order. The module picks the learning rate (OptimizerConfig::lr_of), and tensors
  // of fewer than 2 dimensions (biases, norms) get no weight decay.
  ParallelOptimizer(std::vector<std::pair<std::string, at::Tensor>> params,
                    const OptimizerConfig& optimizer, const DistributedConfig& distributed,
                    const ProcessGroup& group, at::Device device);

  // One micro-batch's backward of `loss`, its gradients synchronised while it runs.
  // `last`: the step's last micro-batch.
  void backward(const at::Tensor& loss, bool last);

  struct Step {
    double grad_norm = 0.0;  // before clipping
    bool skipped = false;    // a NaN/Inf loss or gradient: no update
  };
  // Every rank must call it, with its own view of whether its loss was finite.
  Step step(double lr_factor, bool loss_finite);

  int64_t parameters() const { return layout_.numel; }
  const std::vector<ParamGroup>& groups() const { return optimizer_->groups(); }
  const FlatLayout& layout() const { return layout_; }
  const GradientSync& gradient_sync() const { return *sync_; }
  void inject_faults(GradientSync::Faults faults) { sync_->inject_faults(faults); }

  // ZeRO-3: the units whose weights are gathered around each block; nullptr otherwise.
  FullyShardedUnits* units() { return units_.get(); }
  const FullyShardedUnits* units() const { return units_.get(); }
  // ZeRO-3: the bucket of a unit (fsdp_unit's name); -1 for one without parameters here.
  int64_t bucket_of_unit(const std::string& unit) const;
  // Every rank calls it. ZeRO-3: each parameter that is sharded away, gathered one unit at
  // a time (and freed again after fn); nothing under ZeRO 0-2, whose weights are whole.
  void for_each_sharded_parameter(
      const std::function<void(const std::string& name, const at::Tensor& value)>& fn);

  // Bytes this rank holds between steps.
  int64_t state_bytes() const { return 3 * 4 * layout_.shard_numel; }  // master + moments
  int64_t gradient_bytes() const { return sync_->buffer_bytes(); }
  int64_t parameter_bytes() const;  // trainable weights as held now (ZeRO-3: the root)

  // Every rank calls it: writes folder/<name>-rank<r>-of-<n>.safetensors with this rank's
  // pieces (rank 0 only, when nothing is sharded), and rank 0 writes <name>.index.json.
  void save_shard(const std::string& folder, const std::string& name) const;
  // Reads this rank's pieces from a checkpoint written on any number of ranks at any ZeRO
  // stage, from memory-mapped files, then writes the weights into the parameters. Every
  // rank calls it. FormatError naming the file and key when the index or a piece is wrong
  // or describes other parameters.
  void load_shard(const std::string& folder, const std::string& name);

 private:
  void write_back();

  const ProcessGroup& group_;
  OptimizerConfig config_;
  int64_t zero_stage_;
  FlatLayout layout_;
  std::unique_ptr<GradientSync> sync_;
  std::unique_ptr<ShardedAdamW> optimizer_;
  std::unique_ptr<FullyShardedUnits> units_;
};

}  // namespace vilau
