#pragma once
// Data parallelism over a ProcessGroup: every trainable parameter has a slot in one flat
// fp32 gradient buffer, and the ranks combine their gradients in it.
//
// - DDP (zero_stage 0, 1): the buffer is split into buckets in reverse parameter order,
//   roughly the order backward produces gradients. A hook on each parameter's gradient
//   accumulator copies the gradient into its slot; a bucket whose slots are all filled is
//   all-reduced at once, while backward goes on. Buckets start strictly in index order on
//   every rank, so ranks whose graphs differ (a batch without image targets leaves the depth
//   transformer unused) still issue the same collectives; unused slots count as zeros.
// - ZeRO-2 (zero_stage 2): after backward the gradients are reduce-scattered, so each rank
//   keeps only the shard its optimizer owns, and the parameters' .grad are freed.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "vilau/dist/process_group.h"

namespace vilau {

// Where each parameter lives in the flat buffers. The total is padded to a multiple of the
// world size so that every rank owns an equal shard.
struct FlatLayout {
  std::vector<std::string> names;
  std::vector<at::Tensor> params;
  std::vector<int64_t> offsets;  // start of each parameter
  int64_t numel = 0;             // without padding
  int64_t padded = 0;
  int64_t shard_size(int64_t world) const { return padded / world; }

  FlatLayout(std::vector<std::pair<std::string, at::Tensor>> named, int64_t world_size);
  // Parameters -> flat fp32 [padded], padding zero.
  at::Tensor gather(at::ScalarType dtype = at::kFloat) const;
  // flat [padded] -> parameters, cast to each parameter's dtype.
  void scatter(const at::Tensor& flat) const;
};

class GradientSync {
 public:
  // bucket_bytes: size of a DDP bucket in fp32 bytes.
  GradientSync(const FlatLayout& layout, const ProcessGroup& group, int64_t zero_stage,
               int64_t bucket_bytes, at::Device device);
  ~GradientSync();
  GradientSync(const GradientSync&) = delete;
  GradientSync& operator=(const GradientSync&) = delete;

  // Call before the backward of the last micro-batch of a step: only then do the hooks
  // copy and reduce (earlier micro-batches accumulate into .grad as usual).
  void begin_sync();
  // Waits for every reduction and returns this rank's gradients, averaged over ranks:
  // the full flat buffer [padded] for DDP, this rank's shard for ZeRO-2. Frees .grad.
  at::Tensor finish();

  int64_t buckets() const;

  struct Impl;  // public only so that the autograd hooks can reach it

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace vilau
