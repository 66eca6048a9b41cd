// `vilau eval tower`: the vision tower alone: reconstruction PSNR, SSIM and rFID, and
// zero-shot classification with its text tower (docs/evaluation.md, Tower).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "commands.h"
#include "vilau/core/error.h"
#include "vilau/eval/fid.h"
#include "vilau/eval/tower_eval.h"
#include "vilau/infer/runtime.h"
#include "vilau/io/atomic_file.h"
#include "vilau/tokenizer/tokenizer.h"

namespace fs = std::filesystem;

namespace vilau::cli {

namespace {

struct TowerArgs {
  std::string model, images, labels, classes, image_root, tokenizer, inception, out,
      prompt_template = "a photo of a {}.", device = "cpu";
  int64_t batch = 32, limit = 0;
  bool no_progress = false;
};

std::vector<std::string> read_class_names(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    throw IoError(describe(path, "cannot open class names", "one class name per line"));
  }
  std::vector<std::string> names;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) names.push_back(line);
  }
  if (names.empty()) {
    throw FormatError(describe(path, "class names", "one class name per line", "no lines"));
  }
  return names;
}

nlohmann::json reconstruction(const TowerArgs& args, VisionTowerImpl& tower, at::Device device) {
  std::vector<std::string> images = eval::list_fid_images(args.images);
  if (args.limit > 0 && static_cast<size_t>(args.limit) < images.size()) {
    images.resize(static_cast<size_t>(args.limit));
  }
  const eval::ReconstructionResult r =
      eval::evaluate_reconstruction(tower, images, args.batch, args.out, !args.no_progress);
  nlohmann::json out = {{"psnr_db", r.psnr_db},
                        {"ssim", r.ssim},
                        {"count", r.count},
                        {"resolution", tower.config().vision.image_size},
                        {"reference", "input resized by Pillow bicubic to the tower resolution"}};
  if (!args.inception.empty()) {
    const eval::FidFeatureExtractor extractor(eval::FidInception::load(args.inception, device));
    const fs::path dir(args.out);
    out["rfid"] = eval::frechet_distance(
        extractor.folder_stats((dir / "inputs").string(), 50, !args.no_progress),
        extractor.folder_stats((dir / "reconstructions").string(), 50, !args.no_progress));
  }
  return out;
}

nlohmann::json zero_shot(const TowerArgs& args, VisionTowerImpl& tower) {
  const std::vector<eval::LabelledImage> images =
      eval::read_labelled_images(args.labels, args.image_root);
  std::vector<std::string> classes;
  if (args.classes.empty()) {
    const std::set<std::string> unique = [&images] {
      std::set<std::string> s;
      for (const auto& i : images) s.insert(i.label);
      return s;
    }();
    classes.assign(unique.begin(), unique.end());
  } else {
    classes = read_class_names(args.classes);
  }
  const std::string tokenizer_dir =
      args.tokenizer.empty() ? (fs::path(args.model) / "llm").string() : args.tokenizer;
  const Tokenizer tokenizer = Tokenizer::load(tokenizer_dir);
  const eval::ZeroShotResult r = eval::zero_shot_classify(
      tower, tokenizer, images, classes, args.prompt_template, args.batch, !args.no_progress);
  return {{"top1", r.top1},
          {"top5", r.top5},
          {"count", r.count},
          {"classes", classes.size()},
          {"template", args.prompt_template},
          {"tokenizer", tokenizer_dir},
          {"per_class_top1", r.per_class_top1}};
}

}  // namespace

void add_eval_tower_command(CLI::App& eval) {
  auto args = std::make_shared<TowerArgs>();
  CLI::App* cmd = eval.add_subcommand(
      "tower", "Vision tower metrics: reconstruction PSNR/SSIM/rFID and zero-shot accuracy");
  cmd->add_option("--model", args->model, "A checkpoint folder with vision_tower/")->required();
  cmd->add_option("--out", args->out, "Output folder: inputs/, reconstructions/, results.json")
      ->required();
  cmd->add_option("--images", args->images, "Folder of pictures to reconstruct");
  cmd->add_option("--limit", args->limit, "Only the first N pictures of --images by name");
  cmd->add_option("--inception", args->inception, "FID Inception weights: adds rFID");
  cmd->add_option("--labels", args->labels,
                  R"(JSONL of {"image": ..., "label": ...} for zero-shot classification)");
  cmd->add_option("--image-root", args->image_root,
                  "Folder relative --labels paths start from (default: the file's folder)");
  cmd->add_option("--classes", args->classes,
                  "Class names, one per line (default: the labels that occur)");
  cmd->add_option("--template", args->prompt_template, "Prompt with {} for the class name")
      ->capture_default_str();
  cmd->add_option("--tokenizer", args->tokenizer,
                  "Text-tower tokenizer folder (default: MODEL/llm)");
  cmd->add_option("--batch", args->batch, "Pictures per pass")->capture_default_str();
  cmd->add_option("--device", args->device, "cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_flag("--no-progress", args->no_progress, "No progress bars");
  cmd->callback([args] {
    if (args->images.empty() && args->labels.empty()) {
      throw ConfigError(describe("vilau eval tower", "nothing to measure",
                                 "--images (reconstruction) and/or --labels (zero-shot)"));
    }
    const at::Device device = parse_device(args->device);
    VisionTower tower = load_vision_tower(args->model, device);
    nlohmann::json results = {{"model", args->model}};
    if (!args->images.empty()) results["reconstruction"] = reconstruction(*args, *tower, device);
    if (!args->labels.empty()) results["zero_shot"] = zero_shot(*args, *tower);
    fs::create_directories(args->out);
    io::write_file_atomic((fs::path(args->out) / "results.json").string(), results.dump(2) + "\n");
    std::printf("%s\n", results.dump().c_str());
  });
}

}  // namespace vilau::cli
