// `vilau data synth`: the demo's procedural dataset (docs/demo-world.md).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "vilau/eval/synthetic_world.h"

namespace vilau::cli {

void add_data_command(CLI::App& app) {
  CLI::App* data = app.add_subcommand("data", "Make datasets");
  data->require_subcommand(1);
  CLI::App* synth = data->add_subcommand(
      "synth", "Write the synthetic world of coloured shapes: pictures, captions, questions");
  auto options = std::make_shared<eval::SyntheticWorldOptions>();
  synth->add_option("--out", options->out, "Output folder")->required();
  synth->add_option("--size", options->size, "Picture side in pixels")->capture_default_str();
  synth->add_option("--count", options->count, "Training pictures")->capture_default_str();
  synth->add_option("--seed", options->seed, "Random seed")->capture_default_str();
  synth
      ->add_option("--heldout-fraction", options->heldout_fraction,
                   "Share of (colour, shape, position) combinations kept out of training")
      ->capture_default_str();
  synth->add_option("--render-eval", options->render_eval,
                    "Also write ground-truth pictures of eval_prompts.jsonl here as <id>.png");
  synth->callback([options] {
    const eval::SyntheticWorldSummary s = eval::write_synthetic_world(*options);
    const nlohmann::json summary = {{"out", options->out},
                                    {"seed", options->seed},
                                    {"train_images", s.train_images},
                                    {"train_captions", s.train_captions},
                                    {"train_questions", s.train_questions},
                                    {"eval_images", s.eval_images},
                                    {"eval_questions", s.eval_questions},
                                    {"eval_prompts", s.eval_prompts}};
    std::printf("%s\n", summary.dump().c_str());
  });
}

}  // namespace vilau::cli
