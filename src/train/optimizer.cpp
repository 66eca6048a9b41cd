#include "vilau/train/optimizer.h"

#include <torch/torch.h>

#include <cmath>

#include "vilau/core/error.h"

namespace vilau {

void OptimizerConfig::validate(const std::string& path) const {
  config_check(lr > 0.0, path + ".lr", "a learning rate > 0", std::to_string(lr));
  config_check(weight_decay >= 0.0, path + ".weight_decay", ">= 0", std::to_string(weight_decay));
  config_check(beta1 >= 0.0 && beta1 < 1.0, path + ".beta1", "in [0, 1)", std::to_string(beta1));
  config_check(beta2 >= 0.0 && beta2 < 1.0, path + ".beta2", "in [0, 1)", std::to_string(beta2));
  config_check(eps > 0.0, path + ".eps", "> 0", std::to_string(eps));
  config_check(warmup_ratio >= 0.0 && warmup_ratio <= 1.0, path + ".warmup_ratio", "in [0, 1]",
               std::to_string(warmup_ratio));
  config_check(min_lr_ratio >= 0.0 && min_lr_ratio <= 1.0, path + ".min_lr_ratio", "in [0, 1]",
               std::to_string(min_lr_ratio));
  config_check(grad_clip >= 0.0, path + ".grad_clip", ">= 0 (0 disables)",
               std::to_string(grad_clip));
  const std::pair<const char*, double> modules[] = {{"llm_lr", llm_lr},
                                                    {"mm_projector_lr", mm_projector_lr},
                                                    {"depth_transformer_lr", depth_transformer_lr},
                                                    {"vision_tower_lr", vision_tower_lr}};
  for (const auto& [key, value] : modules) {
    config_check(value >= 0.0, path + "." + key, ">= 0 (0 means lr)", std::to_string(value));
  }
}

double OptimizerConfig::lr_of(const std::string& module) const {
  const double specific = module == "llm"                 ? llm_lr
                          : module == "mm_projector"      ? mm_projector_lr
                          : module == "depth_transformer" ? depth_transformer_lr
                          : module == "vision_tower"      ? vision_tower_lr
                                                          : 0.0;
  return specific > 0.0 ? specific : lr;
}

double cosine_lr_factor(int64_t step, int64_t total_steps, double warmup_ratio,
                        double min_lr_ratio) {
  const auto warmup =
      static_cast<int64_t>(std::ceil(warmup_ratio * static_cast<double>(total_steps)));
  if (step < warmup) {
    return static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup));
  }
  const double progress = static_cast<double>(step - warmup) /
                          static_cast<double>(std::max<int64_t>(1, total_steps - warmup));
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * std::min(1.0, progress)));
  return min_lr_ratio + (1.0 - min_lr_ratio) * cosine;
}

ShardedAdamW::ShardedAdamW(std::vector<ParamGroup> groups, const OptimizerConfig& config,
                           int64_t shard_begin, const at::Tensor& master)
    : groups_(std::move(groups)), config_(config) {
  master_ = master.detach().to(at::kFloat).clone();
  exp_avg_ = at::zeros_like(master_);
  exp_avg_sq_ = at::zeros_like(master_);
  const int64_t shard_end = shard_begin + master_.numel();
  for (size_t g = 0; g < groups_.size(); ++g) {
    const int64_t begin = std::max(groups_[g].begin, shard_begin);
    const int64_t end = std::min(groups_[g].end, shard_end);
    if (begin < end) {
      segments_.push_back({g, begin - shard_begin, end - begin, at::zeros({}, master_.options())});
    }
  }
}

void ShardedAdamW::step(const at::Tensor& grads, double lr_factor) {
  if (grads.numel() != master_.numel()) {
    throw ShapeError(describe("AdamW step", "gradient shard", std::to_string(master_.numel()),
                              std::to_string(grads.numel())));
  }
  torch::NoGradGuard no_grad;
  for (Segment& s : segments_) {
    const ParamGroup& g = groups_[s.group];
    const std::vector<at::Tensor> params = {master_.narrow(0, s.begin, s.length)};
    const std::vector<at::Tensor> grad = {grads.narrow(0, s.begin, s.length)};
    const std::vector<at::Tensor> m = {exp_avg_.narrow(0, s.begin, s.length)};
    const std::vector<at::Tensor> v = {exp_avg_sq_.narrow(0, s.begin, s.length)};
    s.step.add_(1);  // the kernel reads the step count; callers advance it, as torch.optim does
    const std::vector<at::Tensor> step = {s.step};
    at::_fused_adamw_(params, grad, m, v, {}, step, g.lr * lr_factor, config_.beta1, config_.beta2,
                      g.weight_decay, config_.eps, false, false);
  }
  ++steps_;
}

std::map<std::string, at::Tensor> ShardedAdamW::state() const {
  return {{"master", master_},
          {"exp_avg", exp_avg_},
          {"exp_avg_sq", exp_avg_sq_},
          {"step", at::tensor({steps_}, at::kLong)}};
}

void ShardedAdamW::load_state(const std::map<std::string, at::Tensor>& state) {
  for (const char* name : {"master", "exp_avg", "exp_avg_sq"}) {
    const auto it = state.find(name);
    if (it == state.end() || it->second.numel() != master_.numel()) {
      throw FormatError(
          describe("optimizer state", name, std::to_string(master_.numel()) + " values",
                   it == state.end() ? "missing" : std::to_string(it->second.numel())));
    }
  }
  const auto step = state.find("step");
  if (step == state.end() || step->second.numel() != 1) {
    throw FormatError(describe("optimizer state", "step", "one integer", "missing"));
  }
  torch::NoGradGuard no_grad;
  master_.copy_(state.at("master").view(-1));
  exp_avg_.copy_(state.at("exp_avg").view(-1));
  exp_avg_sq_.copy_(state.at("exp_avg_sq").view(-1));
  steps_ = step->second.to(at::kLong).item<int64_t>();
  for (Segment& s : segments_) s.step.fill_(static_cast<double>(steps_));
}

}  // namespace vilau
