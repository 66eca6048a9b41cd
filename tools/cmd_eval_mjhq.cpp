// `vilau eval mjhq`: MJHQ-30K text-to-image FID, generation and scoring in one resumable,
// rank-sharded command (docs/evaluation.md, MJHQ-30K).
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "commands.h"
#include "vilau/core/error.h"
#include "vilau/eval/mjhq.h"
#include "vilau/infer/batch_generation.h"
#include "vilau/infer/runtime.h"
#include "vilau/io/atomic_file.h"

namespace fs = std::filesystem;

namespace vilau::cli {

namespace {

struct MjhqArgs {
  std::string model, meta, out, real, real_stats, inception, device = "cpu", dtype = "auto",
                                                             layout = "halves";
  int64_t batch = 1, limit = 0, fid_batch = 50;
  double wait_minutes = 60;
  uint64_t seed = 0;
  bool no_score = false, no_progress = false;
  ImageOptions image;
};

std::map<std::string, eval::FidStats> load_stats_dir(const fs::path& dir) {
  std::map<std::string, eval::FidStats> stats;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() == ".safetensors") {
      stats.emplace(entry.path().stem().string(), eval::load_fid_stats(entry.path().string()));
    }
  }
  if (!stats.count("all")) {
    throw IoError(describe(dir.string(), "MJHQ-30K real statistics", "all.safetensors", "none"));
  }
  return stats;
}

void save_stats_dir(const fs::path& dir, const std::map<std::string, eval::FidStats>& stats) {
  fs::create_directories(dir);
  for (const auto& [name, s] : stats) {
    if (s.mu.defined()) eval::save_fid_stats((dir / (name + ".safetensors")).string(), s);
  }
}

std::vector<std::string> categories_of(const std::vector<eval::MjhqPrompt>& prompts) {
  std::vector<std::string> out;
  for (const auto& p : prompts) out.push_back(p.category);
  return out;
}

// Ranks other than 0 may still be drawing: rank 0 scores once every picture is on disk.
void wait_for_images(const std::vector<std::string>& paths, double minutes) {
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(minutes * 60000));
  for (;;) {
    const auto missing = std::count_if(paths.begin(), paths.end(),
                                       [](const std::string& p) { return !fs::exists(p); });
    if (missing == 0) return;
    if (std::chrono::steady_clock::now() > deadline) {
      throw Error(describe("vilau eval mjhq", "generated pictures", "all on disk",
                           std::to_string(missing) + " still missing after --wait-minutes"));
    }
    std::fprintf(stderr, "vilau eval mjhq: waiting for %lld pictures of other ranks\n",
                 static_cast<long long>(missing));
    std::this_thread::sleep_for(std::chrono::seconds(10));
  }
}

nlohmann::json protocol(const MjhqArgs& args, const ImageOptions& options, int64_t resolution,
                        size_t prompts) {
  return {{"model", args.model},
          {"meta", args.meta},
          {"prompts", prompts},
          {"generated_resolution", resolution},
          {"fid_resize", "clean-fid: Pillow bicubic in float to 299x299, both sides"},
          {"features", "pytorch-fid Inception-v3 pool3, 2048-d"},
          {"inception", args.inception},
          {"cfg", options.cfg_scale},
          {"cfg_layout", args.layout},
          {"temperature", options.sampler.temperature},
          {"top_k", options.sampler.top_k},
          {"top_p", options.sampler.top_p},
          {"seed", args.seed},
          {"seeding", "batch b draws from seed + index of its first prompt (sorted ids)"},
          {"batch", args.batch}};
}

void run_mjhq(const MjhqArgs& args) {
  ImageOptions options = args.image;
  options.layout = parse_cfg_layout(args.layout);
  options.validate();
  config_check(args.batch > 0, "--batch", "a positive count", std::to_string(args.batch));
  std::vector<eval::MjhqPrompt> prompts = eval::read_mjhq_meta(args.meta);
  if (args.limit > 0 && static_cast<size_t>(args.limit) < prompts.size()) {
    prompts.resize(static_cast<size_t>(args.limit));
  }
  // Everything scoring needs is checked before hours of generation, not after.
  const fs::path real_cache =
      args.real_stats.empty() ? fs::path(args.out) / "real_stats" : fs::path(args.real_stats);
  const bool cached = fs::exists(real_cache / "all.safetensors");
  std::vector<std::string> real_paths;
  if (!args.no_score) {
    config_check(!args.inception.empty(), "--inception", "FID Inception weights to score with",
                 "none (or pass --no-score)");
    if (!fs::is_regular_file(args.inception)) {
      throw IoError(
          describe(args.inception, "cannot open", "FID Inception weights", "no such file"));
    }
    if (!cached) {
      config_check(!args.real.empty(), "--real", "the MJHQ-30K pictures",
                   "none, and no statistics in " + real_cache.string());
      for (const auto& p : prompts) real_paths.push_back(eval::mjhq_real_image(args.real, p));
    }
  }
  const at::Device device = parse_device(args.device);
  const fs::path images = fs::path(args.out) / "images";
  const Shard shard = shard_from_env();
  std::vector<PromptEntry> entries;
  std::vector<std::string> fake_paths;
  for (const auto& p : prompts) {
    entries.push_back({p.id, p.prompt});
    fake_paths.push_back((images / (p.id + ".png")).string());
  }
  int64_t resolution = 0;
  {
    const InferenceModel loaded =
        load_inference_model(args.model, device, parse_dtype(args.dtype, device));
    resolution = loaded.model->config().vision_tower.vision.image_size;
    ImageGenerator generator(loaded.model);
    PromptFileOptions file_options;
    file_options.image = options;
    file_options.batch = args.batch;
    file_options.seed = args.seed;
    file_options.progress = !args.no_progress;
    const PromptFileSummary done = generate_prompt_file(
        generator, loaded.tokenizer, device, entries, images.string(), file_options, shard);
    std::fprintf(stderr, "vilau eval mjhq: rank %lld drew %lld, %lld already on disk\n",
                 static_cast<long long>(shard.rank), static_cast<long long>(done.generated),
                 static_cast<long long>(done.skipped));
  }
  if (args.no_score || shard.rank != 0) return;
  wait_for_images(fake_paths, args.wait_minutes);

  const eval::FidFeatureExtractor extractor(eval::FidInception::load(args.inception, device));
  const std::vector<std::string> categories = categories_of(prompts);
  std::map<std::string, eval::FidStats> real;
  if (cached) {
    real = load_stats_dir(real_cache);
  } else {
    real = eval::mjhq_stats(extractor.features(real_paths, args.fid_batch, !args.no_progress),
                            categories);
    save_stats_dir(real_cache, real);
  }
  const auto fake = eval::mjhq_stats(
      extractor.features(fake_paths, args.fid_batch, !args.no_progress), categories);
  const eval::CategoryFid fid = eval::mjhq_fid(real, fake);
  nlohmann::json per_category = nlohmann::json::object();
  for (const auto& [category, value] : fid.per_category) {
    per_category[category] = value ? nlohmann::json(*value) : nlohmann::json(nullptr);
  }
  const nlohmann::json results = {
      {"fid", fid.overall},
      {"fid_per_category", per_category},
      {"counts", fid.counts},
      {"real_stats", real_cache.string()},
      {"protocol", protocol(args, options, resolution, prompts.size())}};
  io::write_file_atomic((fs::path(args.out) / "results.json").string(), results.dump(2) + "\n");
  std::printf("%s\n", results.dump().c_str());
}

}  // namespace

void add_eval_mjhq_command(CLI::App& eval) {
  auto args = std::make_shared<MjhqArgs>();
  CLI::App* cmd = eval.add_subcommand(
      "mjhq", "MJHQ-30K FID: draw one picture per prompt (resumable, sharded by RANK), then score");
  cmd->add_option("--model", args->model, "A VILA-U checkpoint folder")->required();
  cmd->add_option("--meta", args->meta, "MJHQ-30K meta_data.json")->required();
  cmd->add_option("--out", args->out, "Output folder: images/, real_stats/, results.json")
      ->required();
  cmd->add_option("--real", args->real, "The MJHQ-30K pictures (mjhq30k_imgs/, by category)");
  cmd->add_option("--real-stats", args->real_stats,
                  "Folder of all.safetensors and <category>.safetensors (default OUT/real_stats, "
                  "written on first use)");
  cmd->add_option("--inception", args->inception,
                  "FID Inception weights (scripts/convert_inception_weights.py)");
  cmd->add_option("--limit", args->limit, "Only the first N prompts by id (smoke runs)");
  cmd->add_option("--batch", args->batch, "Prompts generated together")->capture_default_str();
  cmd->add_option("--fid-batch", args->fid_batch, "Pictures per Inception pass")
      ->capture_default_str();
  cmd->add_option("--cfg", args->image.cfg_scale, "Guidance scale")->capture_default_str();
  cmd->add_option("--cfg-layout", args->layout, "halves or interleaved")->capture_default_str();
  cmd->add_option("--temperature", args->image.sampler.temperature, "0 is greedy")
      ->capture_default_str();
  cmd->add_option("--top-k", args->image.sampler.top_k, "0 disables")->capture_default_str();
  cmd->add_option("--top-p", args->image.sampler.top_p, "1 disables")->capture_default_str();
  cmd->add_option("--seed", args->seed, "Sampling seed")->capture_default_str();
  cmd->add_option("--device", args->device, "cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_option("--dtype", args->dtype, "auto, bf16, fp16 or fp32")->capture_default_str();
  cmd->add_option("--wait-minutes", args->wait_minutes,
                  "How long rank 0 waits for other ranks' pictures before scoring")
      ->capture_default_str();
  cmd->add_flag("--no-score", args->no_score, "Only generate");
  cmd->add_flag("--no-progress", args->no_progress, "No progress bars");
  cmd->callback([args] { run_mjhq(*args); });
}

}  // namespace vilau::cli
