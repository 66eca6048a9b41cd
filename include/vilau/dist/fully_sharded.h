#pragma once
// ZeRO-3 (fully sharded data parallel, after torchtitan's FSDP2): each unit's weights live
// only as this rank's shard of the fp32 master weights; a unit (a FlatLayout bucket: one
// decoder layer, one depth-transformer block) is all-gathered in the parameters' dtype just
// before its forward, freed after it, gathered again when backward recomputes it, and freed
// once its gradients were reduce-scattered (GradientSync's on_launch). The next unit's
// gather is prefetched in both directions. The last bucket, the root unit (embeddings,
// norms, heads, projector), stays gathered for the whole step.
//
// Applied from outside the model through BlockWrapper: the model code stays single-device.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "vilau/core/recompute.h"
#include "vilau/dist/data_parallel.h"
#include "vilau/dist/flat_layout.h"
#include "vilau/dist/process_group.h"

namespace vilau {

class FullyShardedUnits {
 public:
  // master: this rank's fp32 shard of the layout (kept up to date by the optimizer).
  FullyShardedUnits(const FlatLayout& layout, const ProcessGroup& group, const at::Tensor& master,
                    const GradientSync& sync);
  ~FullyShardedUnits();

  int64_t root() const { return static_cast<int64_t>(layout_.buckets.size()) - 1; }
  // Blocking; the parameters of bucket b then hold the full weights.
  void gather(int64_t bucket);
  // Starts gathering bucket b unless it is gathered or under way.
  void prefetch(int64_t bucket);
  // The parameters of bucket b become empty tensors.
  void release(int64_t bucket);
  // After backward reduced bucket b's gradients: release it and prefetch the next one.
  void on_reduced(int64_t bucket);

  // A BlockWrapper that runs block i as unit buckets[i]: gathered, recomputed in backward
  // (activation checkpointing, with the forward's random state replayed), freed.
  BlockWrapper wrapper(std::vector<int64_t> buckets);

  // The most unit buckets (the root not counted) gathered at once since construction.
  int64_t peak_units() const;

 private:
  struct Impl;
  const FlatLayout& layout_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace vilau
