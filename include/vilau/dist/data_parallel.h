#pragma once
// Gradient synchronisation for data parallelism over a ProcessGroup, overlapped with
// backward.
//
// A hook after each parameter's gradient accumulation adds the gradient into an fp32 buffer
// and frees .grad, so micro-batches accumulate in fp32 whatever the parameters' dtype. As
// soon as every gradient of a bucket (FlatLayout) exists, the bucket's collective is
// launched while backward goes on. Buckets launch strictly in layout order on every rank, so
// ranks whose graphs differ (a batch without image targets) issue the same collectives;
// gradients a rank's graph did not produce count as zeros when backward ends.
//
// - Unsharded (ZeRO-0/1): one fp32 accumulator [padded] holds every gradient; on the step's
//   last micro-batch each bucket is all-reduced in place.
// - Sharded (ZeRO-2): no full-size buffer exists. A bucket's gradients are staged in a
//   buffer of the bucket's size, reduce-scattered into this rank's fp32 gradient shard after
//   every micro-batch, and the staging buffer is freed; at most two are in flight.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "vilau/dist/flat_layout.h"
#include "vilau/dist/process_group.h"

namespace vilau {

class GradientSync {
 public:
  struct Options {
    bool shard_gradients = false;              // ZeRO-2
    at::ScalarType reduce_dtype = at::kFloat;  // what the collectives move
    at::Device device{at::kCPU};
    // Called right after a bucket's collective was launched, its gradients taken (ZeRO-3
    // frees the bucket's gathered weights there).
    std::function<void(int64_t bucket)> on_launch;
  };
  // Hooks the layout's parameters, which must be leaves that require grad.
  GradientSync(const FlatLayout& layout, const ProcessGroup& group, Options options);
  ~GradientSync();
  GradientSync(const GradientSync&) = delete;
  GradientSync& operator=(const GradientSync&) = delete;

  // Around each micro-batch's backward. `last`: the step's last micro-batch, whose backward
  // completes the unsharded all-reduce (sharded buckets are reduced after every one).
  void begin_backward(bool last);
  void end_backward();
  // After the last micro-batch: waits for every collective and returns this rank's
  // gradients averaged over ranks: [padded] unsharded, [shard_numel] sharded. Valid until
  // the next begin_backward, which starts the next step from zero.
  const at::Tensor& finish();

  // Between begin_backward and end_backward.
  bool in_backward() const;

  // Bytes of gradient buffers this rank holds between steps.
  int64_t buffer_bytes() const;

  // One record per collective launched in the current step, for the overlap test.
  struct Launch {
    int64_t bucket = 0;
    int64_t gradients_ready = 0;  // parameters whose gradient existed at the launch, of all
    bool during_backward = false;
  };
  const std::vector<Launch>& launches() const;

  // Deliberate bugs the equivalence tests must catch; never set outside tests.
  struct Faults {
    bool skip_average = false;  // forget to divide by the world size
    int64_t reduce_twice = -1;  // this bucket is reduced twice
  };
  void inject_faults(Faults faults);

  struct Impl;  // public only so that the autograd hooks can reach it

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace vilau
