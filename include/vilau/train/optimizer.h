#pragma once
// AdamW over fp32 master weights, on the shard of the flat parameter buffer this rank owns
// (all of it without ZeRO), through ATen's fused AdamW kernel; and the learning-rate
// schedule of the official recipes.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "vilau/core/config.h"

namespace vilau {

struct OptimizerConfig {
  double lr = 2e-5;
  double weight_decay = 0.0;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double warmup_ratio = 0.03;
  double min_lr_ratio = 0.0;  // cosine decays to lr * min_lr_ratio
  double grad_clip = 1.0;     // max global grad norm; 0 disables
  // Per-module learning rates (VILA's mm_projector_lr); 0 means lr.
  double llm_lr = 0.0;
  double mm_projector_lr = 0.0;
  double depth_transformer_lr = 0.0;
  double vision_tower_lr = 0.0;

  template <class V>
  void visit(V& v) {
    v.field("lr", lr);
    v.field("weight_decay", weight_decay);
    v.field("beta1", beta1);
    v.field("beta2", beta2);
    v.field("eps", eps);
    v.field("warmup_ratio", warmup_ratio);
    v.field("min_lr_ratio", min_lr_ratio);
    v.field("grad_clip", grad_clip);
    v.field("llm_lr", llm_lr);
    v.field("mm_projector_lr", mm_projector_lr);
    v.field("depth_transformer_lr", depth_transformer_lr);
    v.field("vision_tower_lr", vision_tower_lr);
  }
  void validate(const std::string& path) const;
  // The learning rate of a top-level module ("llm", "mm_projector", ...).
  double lr_of(const std::string& module) const;
};

// HF's cosine schedule with linear warmup, as the official scripts use it: the factor is
// step / warmup during warmup (0 at step 0), then follows half a cosine to min_lr_ratio.
double cosine_lr_factor(int64_t step, int64_t total_steps, double warmup_ratio,
                        double min_lr_ratio);

// Parameters sharing lr and weight decay (one module, with or without decay: biases, norms
// and other 1-D tensors are not decayed).
struct ParamGroup {
  std::string name;
  double lr = 0.0;
  double weight_decay = 0.0;
};

// A range of this rank's shard whose elements all belong to one group.
struct ShardSegment {
  size_t group = 0;
  int64_t begin = 0, length = 0;
};

class ShardedAdamW {
 public:
  // master: this rank's fp32 weights, copied; the segments cover the parts that train
  // (padding between them stays untouched).
  ShardedAdamW(std::vector<ParamGroup> groups, std::vector<ShardSegment> segments,
               const OptimizerConfig& config, const at::Tensor& master);

  // grads: fp32, the shard's size. lr_factor scales every group's lr.
  void step(const at::Tensor& grads, double lr_factor);

  const at::Tensor& master() const { return master_; }
  const at::Tensor& exp_avg() const { return exp_avg_; }
  const at::Tensor& exp_avg_sq() const { return exp_avg_sq_; }
  const std::vector<ParamGroup>& groups() const { return groups_; }
  int64_t steps() const { return steps_; }
  // After the state was written into master() / exp_avg() / exp_avg_sq() from a checkpoint.
  void set_steps(int64_t steps);
  // Shard element i -> its state, for loading: master, exp_avg, exp_avg_sq.
  at::Tensor& mutable_state(const std::string& name);

 private:
  std::vector<ParamGroup> groups_;
  std::vector<ShardSegment> segments_;
  OptimizerConfig config_;
  at::Tensor master_, exp_avg_, exp_avg_sq_;
  std::vector<at::Tensor> step_counts_;  // the fused kernel's per-tensor step, per segment
  int64_t steps_ = 0;
};

}  // namespace vilau
