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

ShardedAdamW::ShardedAdamW(std::vector<ParamGroup> groups, std::vector<ShardSegment> segments,
                           const OptimizerConfig& config, const at::Tensor& master)
    : groups_(std::move(groups)), segments_(std::move(segments)), config_(config) {
  master_ = master.detach().to(at::kFloat).clone();
  exp_avg_ = at::zeros_like(master_);
  exp_avg_sq_ = at::zeros_like(master_);
  for (const ShardSegment& s : segments_) {
    if (s.group >= groups_.size() || s.begin < 0 || s.begin + s.length > master_.numel()) {
      throw Error(describe("AdamW", "segment", "inside the shard and a known group",
                           std::to_string(s.begin) + "+" + std::to_string(s.length)));
    }
    step_counts_.push_back(at::zeros({}, master_.options()));
  }
}

void ShardedAdamW::step(const at::Tensor& grads, double lr_factor) {
  if (grads.numel() != master_.numel()) {
    throw ShapeError(describe("AdamW step", "gradient shard", std::to_string(master_.numel()),
                              std::to_string(grads.numel())));
  }
  torch::NoGradGuard no_grad;
  // One multi-tensor kernel call per group.
  for (size_t g = 0; g < groups_.size(); ++g) {
    std::vector<at::Tensor> params, grad, m, v, step;
    for (size_t i = 0; i < segments_.size(); ++i) {
      const ShardSegment& s = segments_[i];
      if (s.group != g) continue;
      params.push_back(master_.narrow(0, s.begin, s.length));
      grad.push_back(grads.narrow(0, s.begin, s.length));
      m.push_back(exp_avg_.narrow(0, s.begin, s.length));
      v.push_back(exp_avg_sq_.narrow(0, s.begin, s.length));
      // The kernel reads the step count; callers advance it, as torch.optim does.
      step_counts_[i].add_(1);
      step.push_back(step_counts_[i]);
    }
    if (params.empty()) continue;
    at::_fused_adamw_(params, grad, m, v, {}, step, groups_[g].lr * lr_factor, config_.beta1,
                      config_.beta2, groups_[g].weight_decay, config_.eps, false, false);
  }
  ++steps_;
}

void ShardedAdamW::set_steps(int64_t steps) {
  steps_ = steps;
  for (at::Tensor& s : step_counts_) s.fill_(static_cast<double>(steps));
}

at::Tensor& ShardedAdamW::mutable_state(const std::string& name) {
  if (name == "master") return master_;
  if (name == "exp_avg") return exp_avg_;
  if (name == "exp_avg_sq") return exp_avg_sq_;
  throw FormatError(describe("optimizer state", name, "master, exp_avg or exp_avg_sq", name));
}

}  // namespace vilau
