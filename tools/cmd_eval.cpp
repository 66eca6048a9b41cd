// `vilau eval synth`: the demo's deterministic metrics (docs/demo-world.md); the other
// `vilau eval` subcommands live in cmd_eval_*.cpp.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "vilau/eval/shape_checker.h"
#include "vilau/eval/synthetic_world.h"
#include "vilau/io/atomic_file.h"

namespace vilau::cli {

namespace {

void report(const nlohmann::json& metrics, const std::string& out) {
  if (!out.empty()) {
    io::write_file_atomic(out, metrics.dump(2) + "\n");
  }
  std::printf("%s\n", metrics.dump().c_str());
}

void add_synth(CLI::App& eval) {
  CLI::App* cmd = eval.add_subcommand(
      "synth", "Score text-to-image pictures of the synthetic world with the pixel checker");
  auto world = std::make_shared<std::string>();
  auto images = std::make_shared<std::string>();
  auto prompts = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  cmd->add_option("--world", *world, "Folder written by `vilau data synth`")->required();
  cmd->add_option("--images", *images, "Folder of <id>.png, one per prompt")->required();
  cmd->add_option("--prompts", *prompts, "eval_prompts.jsonl")->required();
  cmd->add_option("--out", *out, "Also write the metrics to this JSON file");
  cmd->callback([world, images, prompts, out] {
    const eval::World w = eval::World::load(*world);
    const eval::SynthMetrics m =
        eval::evaluate_synth_images(w, eval::read_eval_prompts(*prompts), *images);
    report({{"colour_accuracy", m.colour_accuracy},
            {"shape_accuracy", m.shape_accuracy},
            {"both_accuracy", m.both_accuracy},
            {"position_accuracy", m.position_accuracy},
            {"count", m.count},
            {"missing", m.missing}},
           *out);
  });
}

}  // namespace

void add_eval_command(CLI::App& app) {
  CLI::App* eval = app.add_subcommand(
      "eval", "Evaluation: FID, MJHQ-30K, VQA benchmarks, tower metrics, the synthetic world");
  eval->require_subcommand(1);
  add_synth(*eval);
  add_eval_vqa_command(*eval);
  add_eval_fid_command(*eval);
  add_eval_mjhq_command(*eval);
  add_eval_tower_command(*eval);
}

}  // namespace vilau::cli
