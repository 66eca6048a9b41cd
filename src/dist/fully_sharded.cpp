#include "vilau/dist/fully_sharded.h"

#include <ATen/core/grad_mode.h>
#include <torch/torch.h>

#include <mutex>

#include "vilau/core/error.h"

namespace vilau {

struct FullyShardedUnits::Impl {
  const ProcessGroup& group;
  const at::Tensor& master;
  const GradientSync& sync;
  struct Unit {
    at::Tensor full, input;  // input: this rank's chunk while the gather runs
    std::unique_ptr<ProcessGroup::Pending> pending;
    bool gathered = false;
    at::ScalarType dtype = at::kFloat;
  };
  std::vector<Unit> units;
  int64_t gathered_units = 0, peak = 0;

  Impl(const ProcessGroup& g, const at::Tensor& m, const GradientSync& s)
      : group(g), master(m), sync(s) {}
};

FullyShardedUnits::FullyShardedUnits(const FlatLayout& layout, const ProcessGroup& group,
                                     const at::Tensor& master, const GradientSync& sync)
    : layout_(layout), impl_(std::make_unique<Impl>(group, master, sync)) {
  impl_->units.resize(layout.buckets.size());
  for (size_t b = 0; b < layout.buckets.size(); ++b) {
    impl_->units[b].dtype = layout.gather_dtype(static_cast<int64_t>(b));
    impl_->units[b].gathered = true;  // the parameters start out whole
    ++impl_->gathered_units;
  }
  for (int64_t b = 0; b < root(); ++b) release(b);
  impl_->peak = impl_->gathered_units;
}

FullyShardedUnits::~FullyShardedUnits() {
  for (auto& unit : impl_->units) {
    if (unit.pending) unit.pending->wait();
  }
}

void FullyShardedUnits::prefetch(int64_t b) {
  if (b < 0 || b >= root()) return;
  Impl::Unit& unit = impl_->units[b];
  if (unit.gathered || unit.pending) return;
  const FlatLayout::Bucket& bucket = layout_.buckets[b];
  const int64_t chunk = bucket.chunk(layout_.shards);
  unit.input = impl_->master.narrow(0, bucket.shard_offset, chunk).to(unit.dtype).contiguous();
  unit.full = at::empty({bucket.padded}, unit.input.options());
  unit.pending = impl_->group.all_gather_async(unit.full, unit.input);
}

void FullyShardedUnits::gather(int64_t b) {
  Impl::Unit& unit = impl_->units[b];
  if (unit.gathered) return;
  prefetch(b);
  unit.pending->wait();
  unit.pending.reset();
  unit.input = at::Tensor();
  const FlatLayout::Bucket& bucket = layout_.buckets[b];
  for (int64_t i = bucket.first_param; i < bucket.end_param; ++i) {
    const FlatLayout::Param& p = layout_.params[i];
    const_cast<at::Tensor&>(p.tensor).set_data(
        unit.full.narrow(0, p.offset - bucket.begin, p.numel).view(p.shape));
  }
  unit.gathered = true;
  impl_->peak = std::max(impl_->peak, ++impl_->gathered_units);
}

void FullyShardedUnits::release(int64_t b) {
  Impl::Unit& unit = impl_->units[b];
  if (unit.pending) {
    unit.pending->wait();
    unit.pending.reset();
  }
  if (unit.gathered) {
    const FlatLayout::Bucket& bucket = layout_.buckets[b];
    for (int64_t i = bucket.first_param; i < bucket.end_param; ++i) {
      const FlatLayout::Param& p = layout_.params[i];
      const_cast<at::Tensor&>(p.tensor).set_data(at::empty({0}, p.tensor.options()));
    }
    unit.gathered = false;
    --impl_->gathered_units;
  }
  unit.full = unit.input = at::Tensor();
}

void FullyShardedUnits::on_reduced(int64_t b) {
  if (b >= root()) return;
  release(b);
  prefetch(b + 1);  // the layout is in backward order
}

BlockWrapper FullyShardedUnits::wrapper(std::vector<int64_t> buckets) {
  return [this, buckets](int64_t index, const Block& block, const at::Tensor& x) -> at::Tensor {
    if (index < 0 || index >= static_cast<int64_t>(buckets.size())) {
      throw Error(describe("ZeRO-3", "block", "below " + std::to_string(buckets.size()),
                           std::to_string(index)));
    }
    const int64_t b = buckets[index];
    const int64_t next = index + 1 < static_cast<int64_t>(buckets.size()) ? buckets[index + 1] : -1;
    if (!at::GradMode::is_enabled() || !x.requires_grad() || impl_->sync.in_backward()) {
      gather(b);
      prefetch(next);
      at::Tensor y = block(x);
      // With autograd on, the weights stay until backward reduced their gradients.
      if (!at::GradMode::is_enabled()) release(b);
      return y;
    }
    auto forward_rng = std::make_shared<at::Tensor>();
    const at::Device device = x.device();
    return recompute_in_backward(
        [this, b, next, block, forward_rng, device](const at::Tensor& in) {
          at::Generator generator = at::globalContext().defaultGenerator(device);
          if (!at::GradMode::is_enabled()) {  // the forward
            {
              std::lock_guard<std::mutex> lock(generator.mutex());
              *forward_rng = generator.get_state();
            }
            gather(b);
            prefetch(next);
            at::Tensor y = block(in);
            release(b);
            return y;
          }
          // Backward's recompute: the forward's dropout masks again. The weights stay until
          // the gradients are reduced.
          gather(b);
          at::Tensor current;
          {
            std::lock_guard<std::mutex> lock(generator.mutex());
            current = generator.get_state();
            generator.set_state(*forward_rng);
          }
          at::Tensor y = block(in);
          std::lock_guard<std::mutex> lock(generator.mutex());
          generator.set_state(current);
          return y;
        },
        x);
  };
}

int64_t FullyShardedUnits::peak_units() const { return impl_->peak - 1; }

}  // namespace vilau
