// `vilau generate`: text-to-image and text-to-video with classifier-free guidance
// (SPEC §4.1, §4.2), for one prompt or a JSONL file of prompts for evaluation.
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "vilau/core/error.h"
#include "vilau/infer/batch_generation.h"
#include "vilau/infer/image_generation.h"
#include "vilau/infer/outputs.h"
#include "vilau/infer/prompt_file.h"
#include "vilau/infer/runtime.h"
#include "vilau/io/image.h"

namespace fs = std::filesystem;

namespace vilau::cli {

namespace {

struct GenerateArgs {
  std::string model, prompt, prompts, out, device = "cpu", dtype = "auto", layout = "halves";
  int64_t num_images = 1, batch = 1, frames = 0;
  uint64_t seed = 0;
  double fps = 8.0;
  bool video = false;
  ImageOptions image;
};

void generate_one(const GenerateArgs& args, ImageGenerator& generator, const InferenceModel& loaded,
                  at::Device device, const ImageOptions& options) {
  const bool video = options.frames > 0;
  const std::vector<std::vector<int64_t>> cond(
      args.num_images, generation_prompt_ids(loaded.tokenizer, args.prompt, video));
  at::Generator rng = make_generator(device, args.seed);
  const at::Tensor pixels = generator.decode(generator.generate_codes(
      cond, unconditional_prompt_ids(loaded.tokenizer, video), options, rng));
  fs::create_directories(args.out);
  std::vector<std::string> files;
  for (int64_t k = 0; k < args.num_images; ++k) {
    for (const std::string& f :
         write_sample(args.out, numbered_stem("sample_", k, 3), pixels[k], args.fps, true)) {
      files.push_back(f);
    }
  }
  if (!video) {
    const auto columns = static_cast<int64_t>(std::ceil(std::sqrt(args.num_images)));
    io::write_image((fs::path(args.out) / "grid.png").string(), image_grid(pixels, columns));
    files.push_back("grid.png");
  }
  std::printf("%s\n", nlohmann::json{{"out", args.out}, {"files", files}}.dump().c_str());
}

void generate_file(const GenerateArgs& args, ImageGenerator& generator,
                   const InferenceModel& loaded, at::Device device, const ImageOptions& options) {
  PromptFileOptions file_options;
  file_options.image = options;
  file_options.batch = args.batch;
  file_options.per_prompt = args.num_images;
  file_options.seed = args.seed;
  file_options.fps = args.fps;
  const Shard shard = shard_from_env();
  const PromptFileSummary summary =
      generate_prompt_file(generator, loaded.tokenizer, device, read_prompt_file(args.prompts),
                           args.out, file_options, shard);
  std::printf("%s\n", nlohmann::json{{"out", args.out},
                                     {"generated", summary.generated},
                                     {"skipped", summary.skipped},
                                     {"rank", shard.rank},
                                     {"world_size", shard.world}}
                          .dump()
                          .c_str());
}

void run_generate(const GenerateArgs& args) {
  ImageOptions options = args.image;
  options.layout = parse_cfg_layout(args.layout);
  options.validate();
  config_check(args.num_images > 0, "--num-images", "a positive count",
               std::to_string(args.num_images));
  config_check(args.batch > 0, "--batch", "a positive count", std::to_string(args.batch));
  const at::Device device = parse_device(args.device);
  const at::ScalarType dtype = parse_dtype(args.dtype, device);
  const InferenceModel loaded = load_inference_model(args.model, device, dtype);
  if (args.video) {
    options.frames = args.frames > 0 ? args.frames : loaded.model->config().num_video_frames;
  }
  ImageGenerator generator(loaded.model);
  if (args.prompts.empty()) {
    generate_one(args, generator, loaded, device, options);
  } else {
    generate_file(args, generator, loaded, device, options);
  }
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto args = std::make_shared<GenerateArgs>();
  CLI::App* cmd = app.add_subcommand(
      "generate", "Generate images (or videos) from text with classifier-free guidance");
  cmd->add_option("--model", args->model, "A VILA-U checkpoint folder")->required();
  CLI::Option* prompt = cmd->add_option("--prompt", args->prompt, "One prompt");
  CLI::Option* prompts = cmd->add_option(
      "--prompts", args->prompts,
      R"(JSONL of {"id": ..., "prompt": ...}: writes OUT/ID.png, skips existing outputs, )"
      "takes prompt i when i % WORLD_SIZE == RANK");
  prompt->excludes(prompts);
  cmd->add_option("--out", args->out, "Output folder")->required();
  cmd->add_option("--num-images", args->num_images, "Samples per prompt")->capture_default_str();
  cmd->add_option("--batch", args->batch, "Prompts of a --prompts file generated together")
      ->capture_default_str();
  cmd->add_option("--cfg", args->image.cfg_scale, "Guidance scale (1: conditional logits only)")
      ->capture_default_str();
  cmd->add_option("--cfg-layout", args->layout,
                  "halves (official: conditional rows, then unconditional) or interleaved")
      ->capture_default_str();
  cmd->add_option("--cfg-plausibility", args->image.cfg_plausibility,
                  "Guidance picks only codes with a conditional probability of at least this "
                  "times the most likely one's (0: official, every code)")
      ->capture_default_str();
  cmd->add_option("--temperature", args->image.sampler.temperature, "0 is greedy")
      ->capture_default_str();
  cmd->add_option("--top-k", args->image.sampler.top_k, "0 disables")->capture_default_str();
  cmd->add_option("--top-p", args->image.sampler.top_p, "1 disables")->capture_default_str();
  cmd->add_option("--seed", args->seed, "Sampling seed")->capture_default_str();
  cmd->add_flag("--video", args->video, "Generate videos: frame PNGs, a strip PNG and an .avi");
  cmd->add_option("--frames", args->frames, "Video frames (default: the model's num_video_frames)");
  cmd->add_option("--fps", args->fps, "Frame rate of the .avi")->capture_default_str();
  cmd->add_option("--device", args->device, "cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_option("--dtype", args->dtype, "auto (bf16 on GPU, fp32 on CPU), bf16, fp16, fp32")
      ->capture_default_str();
  cmd->callback([args, prompt, prompts] {
    if (prompt->count() == 0 && prompts->count() == 0) {
      throw ConfigError(describe("vilau generate", "no prompt", "--prompt TEXT or --prompts FILE"));
    }
    run_generate(*args);
  });
}

}  // namespace vilau::cli
