// `vilau bench generate`: text-to-image speed, with where the time goes.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "presets.h"
#include "vilau/core/error.h"
#include "vilau/infer/image_generation.h"
#include "vilau/infer/runtime.h"

namespace vilau::cli {

namespace {

struct BenchArgs {
  std::string model, preset, device = "cpu", dtype = "auto", layout = "halves";
  int64_t batch = 1, repeat = 1;
  ImageOptions image;
};

void bench_generate(const BenchArgs& args) {
  ImageOptions options = args.image;
  options.layout = parse_cfg_layout(args.layout);
  options.validate();
  config_check(args.batch > 0 && args.repeat > 0, "--batch/--repeat", "positive counts",
               std::to_string(args.batch) + "/" + std::to_string(args.repeat));
  const at::Device device = parse_device(args.device);
  const at::ScalarType dtype = parse_dtype(args.dtype, device);
  VilaU model{nullptr};
  std::vector<int64_t> cond, uncond;
  if (!args.model.empty()) {
    InferenceModel loaded = load_inference_model(args.model, device, dtype);
    model = loaded.model;
    cond = generation_prompt_ids(loaded.tokenizer, "A photo of a red fox in the snow.", false);
    uncond = unconditional_prompt_ids(loaded.tokenizer, false);
  } else {
    model = random_vila_u(load_preset(args.preset), device, dtype, 0);
    // A random model has no tokenizer; ids of the official prompts' usual lengths serve.
    const int64_t vocab = model->config().llm.vocab_size, im_start = vocab - 4;
    for (int64_t i = 0; i < 48; ++i) cond.push_back(i == 0 ? 1 : 3 + i % (vocab - 8));
    uncond.assign(cond.begin(), cond.begin() + 38);
    cond.push_back(im_start);
    uncond.push_back(im_start);
  }
  ImageGenerator generator(model);
  const std::vector<std::vector<int64_t>> rows(args.batch, cond);
  at::Generator rng = make_generator(device, 0);
  generator.decode(generator.generate_codes(rows, uncond, options, rng));  // warm-up
  generator.reset_times();
  for (int64_t r = 0; r < args.repeat; ++r) {
    generator.decode(generator.generate_codes(rows, uncond, options, rng));
  }
  const GenerationTimes& t = generator.times();
  const double total = t.prefill + t.llm + t.depth + t.decode;
  const nlohmann::json report = {
      {"bench", "generate"},
      {"model", args.model.empty() ? "preset:" + args.preset : args.model},
      {"device", device.str()},
      {"dtype", dtype_name(dtype)},
      {"batch", args.batch},
      {"cfg", options.cfg_scale},
      {"cfg_layout", args.layout},
      {"repeat", args.repeat},
      {"tokens_per_image", model->tokens_per_image()},
      {"code_depth", model->depth_transformer->depth()},
      {"seconds", total},
      {"images_per_s", static_cast<double>(args.batch * args.repeat) / total},
      {"llm_tokens_per_s", static_cast<double>(t.llm_tokens) / (t.prefill + t.llm)},
      {"share_prefill", t.prefill / total},
      {"share_llm", t.llm / total},
      {"share_depth_transformer", t.depth / total},
      {"share_decode", t.decode / total},
  };
  std::printf("%s\n", report.dump(2).c_str());
}

}  // namespace

void add_bench_generate_command(CLI::App& bench) {
  auto args = std::make_shared<BenchArgs>();
  CLI::App* cmd = bench.add_subcommand(
      "generate", "Text-to-image speed: images/s, LLM tokens/s and the share of each part");
  CLI::Option* model = cmd->add_option("--model", args->model, "A VILA-U checkpoint folder");
  CLI::Option* preset =
      cmd->add_option("--preset", args->preset, "Or a randomly initialised preset (tiny, 7b-256)");
  model->excludes(preset);
  cmd->add_option("--batch", args->batch, "Images generated together")->capture_default_str();
  cmd->add_option("--repeat", args->repeat, "Timed runs after one warm-up")->capture_default_str();
  cmd->add_option("--cfg", args->image.cfg_scale, "Guidance scale")->capture_default_str();
  cmd->add_option("--cfg-layout", args->layout, "halves or interleaved")->capture_default_str();
  cmd->add_option("--device", args->device, "cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_option("--dtype", args->dtype, "auto (bf16 on GPU, fp32 on CPU), bf16, fp16, fp32")
      ->capture_default_str();
  cmd->callback([args, model, preset] {
    if (model->count() == 0 && preset->count() == 0) {
      throw ConfigError(
          describe("vilau bench generate", "no model", "--model DIR or --preset NAME"));
    }
    bench_generate(*args);
  });
}

}  // namespace vilau::cli
