#include "vilau/train/parallel_optimizer.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "vilau/core/error.h"

namespace vilau {

namespace {

std::string module_of(const std::string& name) { return name.substr(0, name.find('.')); }

// Orders the parameters so that each (module, decay) group is one contiguous range.
std::vector<std::pair<std::string, at::Tensor>> grouped(
    std::vector<std::pair<std::string, at::Tensor>> params) {
  std::vector<std::string> modules;
  for (const auto& [name, p] : params) {
    if (std::find(modules.begin(), modules.end(), module_of(name)) == modules.end()) {
      modules.push_back(module_of(name));
    }
  }
  const auto rank = [&modules](const std::pair<std::string, at::Tensor>& item) {
    const auto m = std::find(modules.begin(), modules.end(), module_of(item.first));
    return 2 * (m - modules.begin()) + (item.second.dim() < 2 ? 1 : 0);
  };
  std::stable_sort(params.begin(), params.end(),
                   [&rank](const auto& a, const auto& b) { return rank(a) < rank(b); });
  return params;
}

}  // namespace

ParallelOptimizer::ParallelOptimizer(std::vector<std::pair<std::string, at::Tensor>> params,
                                     const OptimizerConfig& optimizer,
                                     const DistributedConfig& distributed,
                                     const ProcessGroup& group, at::Device device)
    : group_(group),
      config_(optimizer),
      zero_stage_(distributed.zero_stage),
      layout_(grouped(std::move(params)), group.world_size()) {
  if (layout_.params.empty()) {
    throw ConfigError(describe("train.trainable", "parameters to train", "at least one", "none"));
  }
  std::vector<ParamGroup> groups;
  for (size_t i = 0; i < layout_.params.size(); ++i) {
    const std::string module = module_of(layout_.names[i]);
    const bool decay = layout_.params[i].dim() >= 2;
    const std::string name = module + (decay ? "" : ".no_decay");
    if (groups.empty() || groups.back().name != name) {
      groups.push_back({name, layout_.offsets[i], layout_.offsets[i], config_.lr_of(module),
                        decay ? config_.weight_decay : 0.0});
    }
    groups.back().end = layout_.offsets[i] + layout_.params[i].numel();
  }
  const int64_t world = group_.world_size();
  const at::Tensor flat = layout_.gather().to(device);
  at::Tensor master = flat;
  if (zero_stage_ > 0) {
    shard_begin_ = group_.rank() * layout_.shard_size(world);
    master = flat.narrow(0, shard_begin_, layout_.shard_size(world));
  }
  optimizer_ = std::make_unique<ShardedAdamW>(std::move(groups), config_, shard_begin_, master);
  sync_ = std::make_unique<GradientSync>(layout_, group_, zero_stage_ == 2 ? 2 : 0,
                                         distributed.bucket_mb << 20, device);
}

at::Tensor ParallelOptimizer::full(const at::Tensor& shard) const {
  if (zero_stage_ == 0) return shard;
  at::Tensor out = at::empty({layout_.padded}, shard.options());
  at::Tensor input = shard.contiguous();
  group_.all_gather(out, input);
  return out;
}

ParallelOptimizer::Step ParallelOptimizer::step(double lr_factor, bool loss_finite) {
  torch::NoGradGuard no_grad;
  at::Tensor grads = sync_->finish();
  if (zero_stage_ == 1) {
    grads = grads.narrow(0, shard_begin_, optimizer_->master().numel());
  }
  // Squared norm of this rank's part, and a flag for a non-finite loss on any rank.
  at::Tensor stats = at::stack(
      {grads.square().sum(), at::scalar_tensor(loss_finite ? 0.0 : 1.0, grads.options())});
  if (zero_stage_ > 0) {
    group_.all_reduce_sum(stats);
  } else {
    at::Tensor flag = stats.narrow(0, 1, 1);
    group_.all_reduce_sum(flag);
  }
  const auto values = stats.cpu();
  Step out;
  out.grad_norm = std::sqrt(values[0].item<double>());
  if (!std::isfinite(out.grad_norm) || values[1].item<double>() > 0) {
    out.skipped = true;
    return out;
  }
  if (config_.grad_clip > 0 && out.grad_norm > config_.grad_clip) {
    grads.mul_(config_.grad_clip / (out.grad_norm + 1e-6));
  }
  optimizer_->step(grads, lr_factor);
  layout_.scatter(full(optimizer_->master()));
  return out;
}

std::map<std::string, at::Tensor> ParallelOptimizer::state() const {
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, t] : optimizer_->state()) {
    out[name] = name == "step" ? t : full(t).narrow(0, 0, layout_.numel).cpu();
  }
  return out;
}

void ParallelOptimizer::load_state(const std::map<std::string, at::Tensor>& state) {
  std::map<std::string, at::Tensor> shard;
  const int64_t size = optimizer_->master().numel();
  for (const auto& [name, t] : state) {
    if (name == "step") {
      shard[name] = t;
      continue;
    }
    if (t.numel() != layout_.numel) {
      throw FormatError(describe("optimizer state", name,
                                 std::to_string(layout_.numel) + " values (the trainable "
                                                                 "parameters)",
                                 std::to_string(t.numel())));
    }
    at::Tensor padded = at::zeros({layout_.padded}, at::kFloat);
    padded.narrow(0, 0, layout_.numel).copy_(t.view(-1));
    shard[name] = padded.narrow(0, shard_begin_, size).to(optimizer_->master().device());
  }
  optimizer_->load_state(shard);
  layout_.scatter(full(optimizer_->master()));
}

}  // namespace vilau
