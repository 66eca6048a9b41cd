#include "vilau/dist/data_parallel.h"

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/torch.h>

#include <deque>
#include <mutex>

#include "vilau/core/error.h"

namespace vilau {

struct GradientSync::Impl {
  const FlatLayout& layout;
  const ProcessGroup& group;
  Options options;
  Faults faults;
  at::Tensor accumulator;           // unsharded: [padded]
  at::Tensor shard;                 // sharded: [shard_numel]
  std::vector<at::Tensor> staging;  // sharded: per bucket, only while it is being filled
  std::vector<int64_t> missing;     // per bucket: parameters whose gradient is still to come
  std::vector<bool> ready;          // per parameter
  int64_t next_bucket = 0;
  int64_t ready_count = 0;
  bool syncing = false, in_backward = false, new_step = true;
  std::vector<Launch> launches;

  struct InFlight {
    int64_t bucket;
    std::unique_ptr<ProcessGroup::Pending> work;
    at::Tensor input, output;  // kept alive until the collective is done
  };
  std::deque<InFlight> in_flight;
  std::mutex mutex;
  std::vector<c10::intrusive_ptr<torch::autograd::Node>> accumulators;
  std::vector<uintptr_t> hook_keys;

  Impl(const FlatLayout& l, const ProcessGroup& g, Options o) : layout(l), group(g), options(o) {}

  at::TensorOptions fp32() const {
    return at::TensorOptions().dtype(at::kFloat).device(options.device);
  }

  // Adds parameter i's .grad into its place and frees it.
  void take(size_t i) {
    const FlatLayout::Param& p = layout.params[i];
    at::Tensor& grad = const_cast<at::Tensor&>(p.tensor).mutable_grad();
    if (!grad.defined()) return;
    const FlatLayout::Bucket& b = layout.buckets[p.bucket];
    if (options.shard_gradients) {
      at::Tensor& buffer = staging[p.bucket];
      if (!buffer.defined()) buffer = at::zeros({b.padded}, fp32());
      buffer.narrow(0, p.offset - b.begin, p.numel).add_(grad.reshape(-1));
    } else {
      accumulator.narrow(0, p.offset, p.numel).add_(grad.reshape(-1));
    }
    grad = at::Tensor();
  }

  void ready_param(size_t i) {
    std::lock_guard<std::mutex> lock(mutex);
    // A backward this sync is not part of (a generator loss reaching the discriminator)
    // leaves .grad to its caller.
    if (!in_backward) return;
    const FlatLayout::Param& p = layout.params[i];
    if (syncing && ready[i] && p.bucket < next_bucket) {
      throw Error(describe("gradient sync", "parameter " + p.name, "one gradient per backward",
                           "a second one after its bucket was reduced"));
    }
    take(i);
    if (!syncing || ready[i]) return;
    ready[i] = true;
    ++ready_count;
    --missing[p.bucket];
    launch_ready();
  }

  void launch_ready() {
    while (next_bucket < static_cast<int64_t>(layout.buckets.size()) && missing[next_bucket] == 0) {
      launch(next_bucket++);
    }
  }

  void launch(int64_t b) {
    launches.push_back({b, ready_count, in_backward});
    const FlatLayout::Bucket& bucket = layout.buckets[b];
    InFlight f;
    f.bucket = b;
    if (options.shard_gradients) {
      while (in_flight.size() >= 2) complete_oldest();
      at::Tensor& buffer = staging[b];
      if (!buffer.defined()) buffer = at::zeros({bucket.padded}, fp32());
      f.input = buffer.to(options.reduce_dtype);
      f.output = at::empty({bucket.chunk(layout.shards)}, f.input.options());
      f.work = group.reduce_scatter_sum_async(f.output, f.input);
      buffer = at::Tensor();
    } else {
      at::Tensor slice = accumulator.narrow(0, bucket.begin, bucket.padded);
      f.input = options.reduce_dtype == at::kFloat ? slice : slice.to(options.reduce_dtype);
      f.work = group.all_reduce_sum_async(f.input);
    }
    in_flight.push_back(std::move(f));
    if (options.on_launch) options.on_launch(b);
  }

  void complete_oldest() {
    InFlight f = std::move(in_flight.front());
    in_flight.pop_front();
    f.work->wait();
    const FlatLayout::Bucket& bucket = layout.buckets[f.bucket];
    const bool twice = faults.reduce_twice == f.bucket;
    if (options.shard_gradients) {
      at::Tensor chunk = shard.narrow(0, bucket.shard_offset, bucket.chunk(layout.shards));
      chunk.add_(f.output);
      if (twice) chunk.add_(f.output);
      return;
    }
    at::Tensor slice = accumulator.narrow(0, bucket.begin, bucket.padded);
    if (options.reduce_dtype != at::kFloat) slice.copy_(f.input);
    if (twice) group.all_reduce_sum(slice);
  }

  void wait_all() {
    while (!in_flight.empty()) complete_oldest();
  }
};

namespace {

// Runs after a parameter's AccumulateGrad node, when .grad holds this backward's gradient.
class AccumulatedHook : public torch::autograd::FunctionPostHook {
 public:
  AccumulatedHook(GradientSync::Impl* impl, size_t index) : impl_(impl), index_(index) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list&) override {
    impl_->ready_param(index_);
    return outputs;
  }

 private:
  GradientSync::Impl* impl_;
  size_t index_;
};

}  // namespace

GradientSync::GradientSync(const FlatLayout& layout, const ProcessGroup& group, Options options)
    : impl_(std::make_unique<Impl>(layout, group, options)) {
  Impl& s = *impl_;
  if (options.reduce_dtype != at::kFloat && options.reduce_dtype != at::kBFloat16) {
    throw ConfigError(describe("train.distributed.reduce_dtype", "value", "fp32 or bf16",
                               c10::toString(options.reduce_dtype)));
  }
  if (options.shard_gradients) {
    s.shard = at::zeros({layout.shard_numel}, s.fp32());
    s.staging.resize(layout.buckets.size());
  } else {
    s.accumulator = at::zeros({layout.padded}, s.fp32());
  }
  s.ready.assign(layout.params.size(), false);
  for (size_t i = 0; i < layout.params.size(); ++i) {
    auto accumulator = torch::autograd::impl::grad_accumulator(layout.params[i].tensor);
    if (!accumulator) {
      throw Error(describe("data parallel", "parameter " + layout.params[i].name,
                           "a leaf tensor that requires grad", "one without a grad accumulator"));
    }
    s.hook_keys.push_back(accumulator->add_post_hook(std::make_unique<AccumulatedHook>(&s, i)));
    s.accumulators.push_back(std::move(accumulator));
  }
}

GradientSync::~GradientSync() {
  for (size_t i = 0; i < impl_->accumulators.size(); ++i) {
    impl_->accumulators[i]->del_post_hook(impl_->hook_keys[i]);
  }
}

void GradientSync::begin_backward(bool last) {
  Impl& s = *impl_;
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.new_step) {
    (s.options.shard_gradients ? s.shard : s.accumulator).zero_();
    s.launches.clear();
    s.new_step = false;
  }
  s.syncing = s.options.shard_gradients || last;
  std::fill(s.ready.begin(), s.ready.end(), false);
  s.missing.clear();
  for (const auto& b : s.layout.buckets) s.missing.push_back(b.end_param - b.first_param);
  s.next_bucket = 0;
  s.ready_count = 0;
  s.in_backward = true;
}

void GradientSync::end_backward() {
  Impl& s = *impl_;
  std::lock_guard<std::mutex> lock(s.mutex);
  s.in_backward = false;
  // Parameters this rank's graph did not reach contribute zeros (or a stray .grad).
  for (size_t i = 0; i < s.layout.params.size(); ++i) {
    s.take(i);
    if (s.syncing && !s.ready[i]) {
      s.ready[i] = true;
      --s.missing[s.layout.params[i].bucket];
    }
  }
  if (!s.syncing) return;
  s.launch_ready();
  s.syncing = false;
  if (s.options.shard_gradients) s.wait_all();
}

const at::Tensor& GradientSync::finish() {
  Impl& s = *impl_;
  std::lock_guard<std::mutex> lock(s.mutex);
  s.wait_all();
  at::Tensor& out = s.options.shard_gradients ? s.shard : s.accumulator;
  if (s.group.distributed() && !s.faults.skip_average) {
    out.div_(static_cast<double>(s.group.world_size()));
  }
  s.new_step = true;
  return out;
}

bool GradientSync::in_backward() const { return impl_->in_backward; }

int64_t GradientSync::buffer_bytes() const {
  const Impl& s = *impl_;
  return 4 * (s.options.shard_gradients ? s.layout.shard_numel : s.layout.padded);
}

const std::vector<GradientSync::Launch>& GradientSync::launches() const { return impl_->launches; }

void GradientSync::inject_faults(Faults faults) { impl_->faults = faults; }

}  // namespace vilau
