#include "vilau/infer/step_graph.h"

#ifdef VILAU_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace vilau {

#ifdef VILAU_WITH_CUDA
struct StepGraph::Impl {
  at::cuda::CUDAGraph graph;
  at::Generator generator;
  at::Device device;
};
#else
struct StepGraph::Impl {};
#endif

bool cuda_graphs_available(at::Device device) {
#ifdef VILAU_WITH_CUDA
  return device.is_cuda();
#else
  (void)device;
  return false;
#endif
}

StepGraph::StepGraph(bool enabled, at::Device device, const at::Generator& generator)
    : enabled_(enabled && cuda_graphs_available(device)) {
#ifdef VILAU_WITH_CUDA
  if (enabled_) impl_.reset(new Impl{at::cuda::CUDAGraph(), generator, device});
#else
  (void)generator;
#endif
}

StepGraph::~StepGraph() = default;

bool StepGraph::active() const { return enabled_; }

bool StepGraph::run(const std::function<void()>& step) {
  const int64_t call = calls_++;
  if (!enabled_ || call == 0) {
    step();
    return false;
  }
#ifdef VILAU_WITH_CUDA
  if (call == 1) {
    // Capture happens on a side stream that first waits for the work queued so far; the
    // caller's stream then waits for the capture before the first replay.
    const c10::cuda::CUDAStream caller = c10::cuda::getCurrentCUDAStream(impl_->device.index());
    const c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(false, impl_->device.index());
    at::cuda::CUDAEvent queued;
    queued.record(caller);
    queued.block(side);
    {
      const c10::cuda::CUDAStreamGuard guard(side);
      impl_->graph.register_generator_state(impl_->generator);
      impl_->graph.capture_begin();
      step();
      impl_->graph.capture_end();
    }
    at::cuda::CUDAEvent captured;
    captured.record(side);
    captured.block(caller);
  }
  impl_->graph.replay();
  return call > 1;
#else
  return false;
#endif
}

}  // namespace vilau
