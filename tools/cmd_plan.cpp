// `vilau plan`: the memory one rank needs to train a model, as JSON (docs/training.md).
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "commands.h"
#include "presets.h"
#include "vilau/core/error.h"
#include "vilau/model/official_checkpoint.h"
#include "vilau/train/memory_plan.h"

namespace vilau::cli {

namespace {

struct PlanArgs {
  std::string preset, model, trainable = "all", dtype = "bf16";
  PlanOptions options;
};

std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

}  // namespace

void add_plan_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "plan", "Per-rank memory (bytes, JSON) of a training run, from the modules built on meta");
  auto args = std::make_shared<PlanArgs>();
  PlanOptions& o = args->options;
  auto* preset = cmd->add_option("--preset", args->preset, "tiny, 7b-256, 7b-384 or a preset YAML");
  auto* model = cmd->add_option("--model", args->model, "An official or vilau model folder");
  preset->excludes(model);
  cmd->add_option("--world-size", o.world_size, "Data-parallel ranks")->capture_default_str();
  cmd->add_option("--zero-stage", o.zero_stage, "0 (DDP), 1, 2 or 3")->capture_default_str();
  cmd->add_option("--micro-batch", o.micro_batch, "Sequences per rank and micro-batch")
      ->capture_default_str();
  cmd->add_option("--seq-len", o.seq_len, "Positions per sequence")->capture_default_str();
  cmd->add_flag("--activation-checkpointing", o.activation_checkpointing,
                "Recompute each LLaMA layer in backward");
  cmd->add_option("--trainable", args->trainable,
                  "all, or a comma list of llm, mm_projector, depth_transformer")
      ->capture_default_str();
  cmd->add_option("--dtype", args->dtype, "bf16 or fp32 (parameters and activations)")
      ->capture_default_str();
  cmd->add_option("--bucket-mb", o.bucket_mb, "Gradient bucket size (train.distributed.bucket_mb)")
      ->capture_default_str();
  cmd->add_option("--visual-positions", o.visual_positions,
                  "Image/video generation targets per sequence; -1: the worst case")
      ->capture_default_str();
  cmd->callback([args] {
    if (args->preset.empty() == args->model.empty()) {
      throw ConfigError(describe("vilau plan", "model", "--preset NAME or --model DIR", "neither"));
    }
    if (args->dtype != "bf16" && args->dtype != "fp32") {
      throw ConfigError(describe("vilau plan", "--dtype", "bf16 or fp32", "'" + args->dtype + "'"));
    }
    PlanOptions options = args->options;
    options.dtype = args->dtype == "bf16" ? at::kBFloat16 : at::kFloat;
    options.trainable = split_commas(args->trainable);
    const ModelConfig config = args->preset.empty() ? OfficialCheckpoint::open(args->model).config()
                                                    : load_preset(args->preset);
    std::printf("%s\n", plan_json(plan_memory(config, options)).dump(2).c_str());
  });
}

}  // namespace vilau::cli
