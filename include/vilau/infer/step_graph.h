#pragma once
// A decode step captured once as a CUDA graph and replayed: the hundreds of kernel launches
// of one LLM position (or one image position: LLM step, D depth steps, CFG and sampling)
// become one. The step must be static, with the same shapes and addresses at every call,
// which vilau's decode steps are (KvCache, DepthKvCache, device-side positions, the
// sampler's device-side draw). Elsewhere than on CUDA, or when off, it runs eagerly.
#include <ATen/core/Generator.h>
#include <c10/core/Device.h>

#include <functional>
#include <memory>

namespace vilau {

class StepGraph {
 public:
  // `generator` is the one the step draws from; the graph advances its state on replay.
  StepGraph(bool enabled, at::Device device, const at::Generator& generator);
  ~StepGraph();
  StepGraph(const StepGraph&) = delete;
  StepGraph& operator=(const StepGraph&) = delete;

  // Runs step(): eagerly the first time (one-off initialisation and the allocator's first
  // blocks stay out of the graph), captured and then replayed the second time, replayed
  // from then on. Returns true when only the graph ran: the step's host code did not, so
  // host-side counters it keeps must be moved on by the caller (KvCache::count_replayed_step).
  bool run(const std::function<void()>& step);
  // Whether the steps are replayed from a graph (false on the CPU or when disabled).
  bool active() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  bool enabled_;
  int64_t calls_ = 0;
};

// Whether CUDA graphs can be used on `device` with this build: a CUDA device and a vilau
// built against a CUDA LibTorch.
bool cuda_graphs_available(at::Device device);

}  // namespace vilau
