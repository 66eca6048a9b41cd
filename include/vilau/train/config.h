#pragma once
// The `train:` section of a run config: which stage, what trains, how to optimise, where
// to write, and how to spread over processes (docs/training.md has recipes).
#include <cstdint>
#include <string>
#include <vector>

#include "vilau/core/config.h"
#include "vilau/model/vila_u.h"
#include "vilau/train/optimizer.h"
#include "vilau/vision/losses.h"

namespace vilau {

struct DistributedConfig {
  // 0: DDP, 1: optimizer state sharded, 2: gradients too, 3: parameters too (multimodal
  // stages; each decoder layer and depth block is gathered around its forward and its
  // recompute in backward, so 3 implies activation checkpointing of those blocks).
  int64_t zero_stage = 0;
  // Gradient bucket size in fp32 megabytes: each bucket's collective starts as soon as
  // backward has produced all of its gradients.
  double bucket_mb = 25.0;
  std::string reduce_dtype = "fp32";  // fp32 | bf16: what gradient collectives move
  int64_t timeout_s = 600;            // a collective that waits longer fails every rank

  template <class V>
  void visit(V& v) {
    v.field("zero_stage", zero_stage);
    v.field("bucket_mb", bucket_mb);
    v.field("reduce_dtype", reduce_dtype);
    v.field("timeout_s", timeout_s);
  }
  void validate(const std::string& path) const;
};

struct TrainConfig {
  std::string stage;       // tower | pretrain | sft | finetune
  std::string output_dir;  // checkpoints, metrics.jsonl, config.yaml, export/
  // A model folder (official or exported by vilau) to start from; empty: the `model:`
  // section, randomly initialised. finetune requires one.
  std::string init;
  // The tokenizer folder when `init` has none (or for a random model).
  std::string tokenizer;
  int64_t max_steps = 0;   // optimizer steps
  int64_t grad_accum = 1;  // micro-batches per step, per rank
  int64_t seed = 42;
  // Top-level modules that train: llm, mm_projector, depth_transformer (multimodal
  // stages); the tower stage trains the vision tower. Everything else is frozen.
  std::vector<std::string> trainable;
  std::string device = "auto";     // auto | cpu | cuda | cuda:N
  std::string precision = "auto";  // auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16
  bool activation_checkpointing = false;
  OptimizerConfig optimizer;
  LossWeights loss_weights;
  TowerLossConfig tower_losses;
  double discriminator_lr = 1e-4;
  int64_t save_every = 0;  // 0: only at the end
  int64_t keep_last = 3;
  int64_t log_every = 1;
  int64_t max_skipped_steps = 10;  // steps with a NaN/Inf loss or gradient before aborting
  bool export_at_end = true;       // official folder under output_dir/export
  DistributedConfig distributed;

  template <class V>
  void visit(V& v) {
    v.field("stage", stage, required);
    v.field("output_dir", output_dir, required);
    v.field("init", init);
    v.field("tokenizer", tokenizer);
    v.field("max_steps", max_steps, required);
    v.field("grad_accum", grad_accum);
    v.field("seed", seed);
    v.field("trainable", trainable);
    v.field("device", device);
    v.field("precision", precision);
    v.field("activation_checkpointing", activation_checkpointing);
    v.field("optimizer", optimizer);
    v.field("loss_weights", loss_weights);
    v.field("tower_losses", tower_losses);
    v.field("discriminator_lr", discriminator_lr);
    v.field("save_every", save_every);
    v.field("keep_last", keep_last);
    v.field("log_every", log_every);
    v.field("max_skipped_steps", max_skipped_steps);
    v.field("export_at_end", export_at_end);
    v.field("distributed", distributed);
  }
  void validate(const std::string& path) const;
  // `trainable`, or the stage's default when empty.
  std::vector<std::string> trainable_modules() const;
};

}  // namespace vilau
