#include "vilau/dist/data_parallel.h"

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/torch.h>

#include <mutex>

#include "vilau/core/error.h"

namespace vilau {

FlatLayout::FlatLayout(std::vector<std::pair<std::string, at::Tensor>> named, int64_t world_size) {
  for (auto& [name, p] : named) {
    names.push_back(name);
    offsets.push_back(numel);
    numel += p.numel();
    params.push_back(p);
  }
  padded = (numel + world_size - 1) / world_size * world_size;
}

at::Tensor FlatLayout::gather(at::ScalarType dtype) const {
  const at::Device device = params.empty() ? at::Device(at::kCPU) : params.front().device();
  at::Tensor flat = at::zeros({padded}, at::TensorOptions().dtype(dtype).device(device));
  for (size_t i = 0; i < params.size(); ++i) {
    flat.narrow(0, offsets[i], params[i].numel()).copy_(params[i].detach().flatten());
  }
  return flat;
}

void FlatLayout::scatter(const at::Tensor& flat) const {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) {
    params[i].copy_(flat.narrow(0, offsets[i], params[i].numel()).view(params[i].sizes()));
  }
}

struct GradientSync::Impl {
  const FlatLayout& layout;
  const ProcessGroup& group;
  int64_t zero_stage;
  at::Tensor flat;
  std::vector<int64_t> bucket_of;                   // per parameter
  std::vector<std::pair<int64_t, int64_t>> ranges;  // per bucket, [begin, end) in flat
  std::vector<int64_t> sizes;                       // parameters per bucket
  std::vector<int64_t> pending;
  std::vector<bool> filled;
  std::vector<std::unique_ptr<ProcessGroup::Pending>> works;
  int64_t next_bucket = 0;
  bool syncing = false;
  std::mutex mutex;
  std::vector<c10::intrusive_ptr<torch::autograd::Node>> accumulators;
  std::vector<uintptr_t> hook_keys;

  Impl(const FlatLayout& l, const ProcessGroup& g, int64_t zero)
      : layout(l), group(g), zero_stage(zero) {}

  void copy_slot(size_t p) {
    at::Tensor slot = flat.narrow(0, layout.offsets[p], layout.params[p].numel());
    const at::Tensor& grad = layout.params[p].grad();
    if (grad.defined()) {
      slot.copy_(grad.flatten());
    } else {
      slot.zero_();
    }
  }

  void ready(size_t p) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!syncing || filled[p]) return;
    copy_slot(p);
    filled[p] = true;
    --pending[bucket_of[p]];
    launch_ready();
  }

  void launch_ready() {
    while (next_bucket < static_cast<int64_t>(ranges.size()) && pending[next_bucket] == 0) {
      const auto [begin, end] = ranges[next_bucket++];
      at::Tensor slice = flat.narrow(0, begin, end - begin);
      works.push_back(group.all_reduce_sum_async(slice));
    }
  }
};

namespace {

// Runs after a parameter's AccumulateGrad node, when .grad holds this backward's sum.
class AccumulatedHook : public torch::autograd::FunctionPostHook {
 public:
  AccumulatedHook(GradientSync::Impl* impl, size_t index) : impl_(impl), index_(index) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list&) override {
    impl_->ready(index_);
    return outputs;
  }

 private:
  GradientSync::Impl* impl_;
  size_t index_;
};

}  // namespace

GradientSync::GradientSync(const FlatLayout& layout, const ProcessGroup& group, int64_t zero_stage,
                           int64_t bucket_bytes, at::Device device)
    : impl_(std::make_unique<Impl>(layout, group, zero_stage)) {
  if (zero_stage < 0 || zero_stage > 2) {
    throw ConfigError(
        describe("train.distributed.zero_stage", "value", "0, 1 or 2", std::to_string(zero_stage)));
  }
  Impl& s = *impl_;
  s.flat = at::zeros({layout.padded}, at::TensorOptions().dtype(at::kFloat).device(device));
  if (zero_stage == 2) return;
  const int64_t n = static_cast<int64_t>(layout.params.size());
  s.bucket_of.assign(n, 0);
  s.filled.assign(n, false);
  const int64_t cap = std::max<int64_t>(1, bucket_bytes / 4);
  int64_t end = layout.padded, size = 0, count = 0;
  for (int64_t p = n - 1; p >= 0; --p) {
    s.bucket_of[p] = static_cast<int64_t>(s.ranges.size());
    size += layout.params[p].numel();
    ++count;
    if (size >= cap || p == 0) {
      s.ranges.emplace_back(layout.offsets[p], end);
      s.sizes.push_back(count);
      end = layout.offsets[p];
      size = count = 0;
    }
  }
  for (int64_t p = 0; p < n; ++p) {
    auto accumulator = torch::autograd::impl::grad_accumulator(layout.params[p]);
    if (!accumulator) {
      throw Error(describe("data parallel", "parameter " + layout.names[p],
                           "a leaf tensor that requires grad", "one without a grad accumulator"));
    }
    s.hook_keys.push_back(accumulator->add_post_hook(
        std::make_unique<AccumulatedHook>(impl_.get(), static_cast<size_t>(p))));
    s.accumulators.push_back(std::move(accumulator));
  }
}

GradientSync::~GradientSync() {
  for (size_t i = 0; i < impl_->accumulators.size(); ++i) {
    impl_->accumulators[i]->del_post_hook(impl_->hook_keys[i]);
  }
}

int64_t GradientSync::buckets() const { return static_cast<int64_t>(impl_->ranges.size()); }

void GradientSync::begin_sync() {
  Impl& s = *impl_;
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.zero_stage == 2) return;
  s.syncing = true;
  s.pending = s.sizes;
  std::fill(s.filled.begin(), s.filled.end(), false);
  s.works.clear();
  s.next_bucket = 0;
  s.flat.narrow(0, s.layout.numel, s.layout.padded - s.layout.numel).zero_();
}

at::Tensor GradientSync::finish() {
  Impl& s = *impl_;
  const int64_t world = s.group.world_size();
  at::Tensor out;
  if (s.zero_stage == 2) {
    for (size_t p = 0; p < s.layout.params.size(); ++p) s.copy_slot(p);
    out = at::empty({s.layout.shard_size(world)}, s.flat.options());
    s.group.reduce_scatter_sum(out, s.flat);
  } else {
    {
      std::lock_guard<std::mutex> lock(s.mutex);
      // Parameters this rank's graph did not reach contribute their .grad or zeros.
      for (size_t p = 0; p < s.layout.params.size(); ++p) {
        if (!s.syncing || s.filled[p]) continue;
        s.copy_slot(p);
        s.filled[p] = true;
        --s.pending[s.bucket_of[p]];
      }
      if (!s.syncing) {  // no begin_sync(): reduce everything now
        s.pending.assign(s.sizes.size(), 0);
        s.next_bucket = 0;
        s.works.clear();
        for (size_t p = 0; p < s.layout.params.size(); ++p) s.copy_slot(p);
      }
      s.launch_ready();
      s.syncing = false;
    }
    for (auto& work : s.works) work->wait();
    out = s.flat;
  }
  if (world > 1) out.div_(static_cast<double>(world));
  for (const at::Tensor& p : s.layout.params) {
    const_cast<at::Tensor&>(p).mutable_grad() = at::Tensor();
  }
  return out;
}

}  // namespace vilau
