// `vilau train`: every stage from one YAML file, on one process or many (torchrun
// --no-python / srun set the rank variables; see docs/training.md).
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "commands.h"
#include "vilau/config.h"
#include "vilau/core/error.h"
#include "vilau/dist/process_group.h"
#include "vilau/train/trainer.h"

namespace vilau::cli {

void add_train_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("train", "Train a stage: tower, pretrain, sft or finetune");
  auto config_path = std::make_shared<std::string>();
  auto overrides = std::make_shared<std::vector<std::string>>();
  auto no_progress = std::make_shared<bool>(false);
  auto stop_after = std::make_shared<int64_t>(-1);
  cmd->add_option("--config", *config_path, "Run config (configs/train/<stage>.yaml)")->required();
  cmd->add_option("--set", *overrides, "Override a key: --set train.max_steps=100 (repeatable)");
  cmd->add_flag("--no-progress", *no_progress, "No progress bar (metrics.jsonl is still written)");
  cmd->add_option("--stop-after-step", *stop_after,
                  "Exit after this step without saving, as a killed run would (for tests)");
  cmd->callback([config_path, overrides, no_progress, stop_after] {
    const Config config = load_run_config(*config_path, *overrides);
    if (!config.train) {
      throw ConfigError(describe(*config_path, "section 'train'", "present", "missing"));
    }
    const DistEnv env = read_dist_env();
    const ProcessGroup group(env, training_device(*config.train, env.local_rank),
                             std::chrono::seconds(config.train->distributed.timeout_s));
    if (group.rank() != 0) spdlog::set_level(spdlog::level::warn);  // only rank 0 logs
    TrainOptions options;
    options.progress = !*no_progress;
    options.stop_after_step = *stop_after;
    const TrainSummary summary = train(config, to_yaml(config), group, options);
    if (group.rank() == 0) {
      nlohmann::json out = {{"first_step", summary.first_step},
                            {"last_step", summary.last_step},
                            {"skipped_steps", summary.skipped_steps},
                            {"resumed_from", summary.resumed_from},
                            {"export_dir", summary.export_dir},
                            {"final_loss", summary.losses.empty() ? 0.0 : summary.losses.back()}};
      std::printf("%s\n", out.dump().c_str());
    }
  });
}

}  // namespace vilau::cli
