#pragma once
// Each subcommand adds itself to the app through one of these; main.cpp lists them all.
#include <CLI/CLI.hpp>

namespace vilau::cli {

void add_info_command(CLI::App& app);
void add_config_command(CLI::App& app);
void add_inspect_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_tokenizer_command(CLI::App& app);
void add_vision_commands(CLI::App& app);
void add_init_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_demo_command(CLI::App& app);
void add_chat_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_data_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_plan_command(CLI::App& app);
void add_eval_fid_command(CLI::App& eval);
void add_eval_vqa_command(CLI::App& eval);
void add_eval_mjhq_command(CLI::App& eval);
void add_eval_tower_command(CLI::App& eval);

}  // namespace vilau::cli
