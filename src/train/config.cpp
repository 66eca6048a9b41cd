#include "vilau/train/config.h"

#include <algorithm>

#include "vilau/core/error.h"

namespace vilau {

namespace {

const std::vector<std::string> kStages = {"tower", "pretrain", "sft", "finetune"};
const std::vector<std::string> kModules = {"llm", "mm_projector", "depth_transformer",
                                           "vision_tower"};

bool one_of(const std::string& value, const std::vector<std::string>& options) {
  return std::find(options.begin(), options.end(), value) != options.end();
}

std::string joined(const std::vector<std::string>& options) {
  std::string out;
  for (const auto& o : options) out += (out.empty() ? "" : ", ") + o;
  return out;
}

}  // namespace

void DistributedConfig::validate(const std::string& path) const {
  config_check(zero_stage >= 0 && zero_stage <= 3, path + ".zero_stage", "0, 1, 2 or 3",
               std::to_string(zero_stage));
  config_check(bucket_mb > 0 && bucket_mb <= 1 << 20, path + ".bucket_mb", "> 0 and <= 1048576",
               std::to_string(bucket_mb));
  config_check(reduce_dtype == "fp32" || reduce_dtype == "bf16", path + ".reduce_dtype",
               "fp32 or bf16", "'" + reduce_dtype + "'");
  config_check(timeout_s > 0, path + ".timeout_s", "> 0", std::to_string(timeout_s));
}

void TrainConfig::validate(const std::string& path) const {
  config_check(one_of(stage, kStages), path + ".stage", joined(kStages), "'" + stage + "'");
  config_check(!output_dir.empty(), path + ".output_dir", "a folder", "''");
  config_check(stage != "finetune" || !init.empty(), path + ".init",
               "a model folder to fine-tune from", "none");
  config_check(max_steps > 0, path + ".max_steps", "> 0", std::to_string(max_steps));
  config_check(grad_accum > 0, path + ".grad_accum", "> 0", std::to_string(grad_accum));
  for (const std::string& m : trainable) {
    config_check(one_of(m, kModules), path + ".trainable", joined(kModules), "'" + m + "'");
  }
  config_check(stage != "tower" || trainable_modules() == std::vector<std::string>{"vision_tower"},
               path + ".trainable", "[vision_tower] for the tower stage", joined(trainable));
  config_check(stage == "tower" || !one_of("vision_tower", trainable_modules()),
               path + ".trainable",
               "llm, mm_projector, depth_transformer (the tower is frozen in multimodal stages)",
               joined(trainable));
  config_check(precision == "auto" || precision == "fp32" || precision == "bf16",
               path + ".precision", "auto, fp32 or bf16", "'" + precision + "'");
  config_check(save_every >= 0, path + ".save_every", ">= 0", std::to_string(save_every));
  config_check(log_every > 0, path + ".log_every", "> 0", std::to_string(log_every));
  config_check(max_skipped_steps >= 0, path + ".max_skipped_steps", ">= 0",
               std::to_string(max_skipped_steps));
  config_check(discriminator_lr > 0.0, path + ".discriminator_lr", "> 0",
               std::to_string(discriminator_lr));
  optimizer.validate(path + ".optimizer");
  loss_weights.validate(path + ".loss_weights");
  tower_losses.validate(path + ".tower_losses");
  distributed.validate(path + ".distributed");
  config_check(stage != "tower" || distributed.zero_stage <= 2, path + ".distributed.zero_stage",
               "0, 1 or 2 for the tower stage (ZeRO-3 shards the LLM and depth-transformer blocks)",
               std::to_string(distributed.zero_stage));
}

std::vector<std::string> TrainConfig::trainable_modules() const {
  if (!trainable.empty()) return trainable;
  if (stage == "tower") return {"vision_tower"};
  return {"llm", "mm_projector", "depth_transformer"};
}

}  // namespace vilau
