// `vilau demo report`: the last two steps of scripts/demo.sh. Scores a demo run with the
// synthetic world's pixel checker (generated pictures), exact-match VQA and the tower's
// reconstruction PSNR, then writes metrics.json, report.md and a grid of prompt/picture
// pairs.
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "commands.h"
#include "vilau/core/error.h"
#include "vilau/eval/shape_checker.h"
#include "vilau/eval/synthetic_world.h"
#include "vilau/eval/tower_eval.h"
#include "vilau/infer/outputs.h"
#include "vilau/infer/runtime.h"
#include "vilau/io/atomic_file.h"
#include "vilau/io/image.h"

namespace vilau::cli {

namespace {

namespace fs = std::filesystem;

// What the issue asks the demo to reach.
constexpr double kColourTarget = 0.90, kShapeTarget = 0.70, kVqaTarget = 0.90;
constexpr size_t kGridCells = 16;

struct DemoArgs {
  std::string run, model;
  bool check = false;
};

void write_report(const fs::path& run, const eval::World& world,
                  const std::vector<eval::EvalPrompt>& prompts, const nlohmann::json& metrics) {
  std::string md = "# vilau demo report\n\n| metric | value | target |\n|---|---|---|\n";
  const auto row = [&md, &metrics](const char* key, const char* target) {
    char value[32];
    std::snprintf(value, sizeof value, "%.3f", metrics.at(key).get<double>());
    md += std::string("| ") + key + " | " + value + " | " + target + " |\n";
  };
  row("colour_accuracy", ">= 0.90");
  row("shape_accuracy", ">= 0.70");
  row("vqa_accuracy", ">= 0.90");
  row("reconstruction_psnr_db", "reported");
  md += "\n![prompts and generated pictures](grid.png)\n\nGrid order (row by row):\n\n";
  md += "| # | prompt | checker reads |\n|---|---|---|\n";
  std::vector<at::Tensor> cells;
  for (size_t i = 0; i < prompts.size() && cells.size() < kGridCells; ++i) {
    const fs::path image = run / "generated" / (prompts[i].id + ".png");
    if (!fs::exists(image)) continue;
    const at::Tensor rgb = io::read_image(image.string());
    const eval::ShapeReading r = eval::read_shape(rgb, world);
    md += "| " + std::to_string(cells.size() + 1) + " | " + prompts[i].prompt + " | " +
          (r.found ? r.colour + " " + r.shape : "nothing") + " |\n";
    cells.push_back(rgb);
  }
  if (!cells.empty()) {
    io::write_image((run / "grid.png").string(), image_grid(at::stack(cells), 4));
  }
  io::write_file_atomic((run / "report.md").string(), md);
}

void run_report(const DemoArgs& args) {
  const fs::path run(args.run), data = run / "data";
  const eval::World world = eval::World::load(data.string());
  const auto prompts = eval::read_eval_prompts((data / "eval_prompts.jsonl").string());
  const auto questions = eval::read_eval_questions((data / "eval_vqa.jsonl").string());
  const eval::SynthMetrics gen =
      eval::evaluate_synth_images(world, prompts, (run / "generated").string());
  const eval::VqaScore vqa =
      eval::vqa_accuracy(eval::read_answers((run / "answers.jsonl").string()), questions);

  InferenceModel loaded = load_inference_model(args.model, at::kCPU, at::kFloat);
  std::vector<std::string> images;
  std::set<std::string> seen;
  for (const auto& q : questions) {
    if (seen.insert(q.image).second) images.push_back((data / q.image).string());
  }
  const eval::ReconstructionResult reconstruction =
      eval::evaluate_reconstruction(*loaded.model->vision_tower, images, 32);

  nlohmann::json metrics = {{"colour_accuracy", gen.colour_accuracy},
                            {"shape_accuracy", gen.shape_accuracy},
                            {"colour_and_shape_accuracy", gen.both_accuracy},
                            {"position_accuracy", gen.position_accuracy},
                            {"generated", gen.count},
                            {"missing_pictures", gen.missing.size()},
                            {"vqa_accuracy", vqa.accuracy},
                            {"vqa_by_kind", vqa.by_kind},
                            {"vqa_questions", vqa.count},
                            {"reconstruction_psnr_db", reconstruction.psnr_db},
                            {"reconstruction_ssim", reconstruction.ssim},
                            {"reconstruction_pictures", images.size()}};
  const bool passed = gen.colour_accuracy >= kColourTarget && gen.shape_accuracy >= kShapeTarget &&
                      vqa.accuracy >= kVqaTarget;
  metrics["targets_met"] = passed;
  io::write_file_atomic((run / "metrics.json").string(), metrics.dump(2) + "\n");
  write_report(run, world, prompts, metrics);
  std::printf("%s\n", metrics.dump(2).c_str());
  if (args.check && !passed) {
    throw Error(describe((run / "metrics.json").string(), "demo targets",
                         "colour >= 0.90, shape >= 0.70, VQA >= 0.90", "lower scores"));
  }
}

}  // namespace

void add_demo_command(CLI::App& app) {
  CLI::App* demo = app.add_subcommand("demo", "Steps of scripts/demo.sh");
  demo->require_subcommand(1);
  auto args = std::make_shared<DemoArgs>();
  CLI::App* report = demo->add_subcommand(
      "report", "Score a demo run: metrics.json, report.md and grid.png in the run folder");
  report->add_option("--run", args->run, "The run folder (holds data/, generated/, answers.jsonl)")
      ->required();
  report->add_option("--model", args->model, "The trained model folder")->required();
  report->add_flag("--check", args->check, "Exit with an error when a target is missed");
  report->callback([args] { run_report(*args); });
}

}  // namespace vilau::cli
