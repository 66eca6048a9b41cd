// `vilau bench generate`: text-to-image speed, with where the time goes.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "bench_common.h"
#include "commands.h"
#include "presets.h"
#include "vilau/core/error.h"
#include "vilau/infer/image_generation.h"
#include "vilau/infer/runtime.h"
#include "vilau/infer/step_graph.h"

namespace vilau::cli {

namespace {

struct BenchArgs : BenchModel {
  std::string layout = "halves", cuda_graphs = "on";
  int64_t batch = 1, repeat = 1;
  ImageOptions image;
};

void bench_generate(const BenchArgs& args) {
  ImageOptions options = args.image;
  options.layout = parse_cfg_layout(args.layout);
  options.cuda_graphs = args.cuda_graphs == "on";
  options.profile = true;
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
  const double bandwidth_before = memory_bandwidth(device);
  for (int64_t r = 0; r < args.repeat; ++r) {
    generator.decode(generator.generate_codes(rows, uncond, options, rng));
  }
  const GenerationTimes t = generator.times();
  const double bandwidth_after = memory_bandwidth(device);
  // Per image position: a two-frame run less a one-frame run, so that the prefill cancels.
  const nlohmann::json counts = counts_per_step(
      [&](int64_t frames) {
        ImageOptions o = options;
        o.frames = frames;
        o.profile = false;
        generator.generate_codes(rows, uncond, o, rng);
      },
      1, 2, static_cast<double>(model->tokens_per_image()));
  // The eager step (graphs replay without dispatching anything to trace) at two positions.
  bool static_step = false;
  {
    ImageOptions o = options;
    o.profile = false;
    o.cuda_graphs = false;
    GenerationTimes unused;
    ImageSession session(*model, rows, uncond, o, rng, unused);
    const int64_t second = std::min<int64_t>(7, session.positions() - 2);
    static_step = is_static_step([&] { session.step(); }, 2, second);
  }
  const double total = t.prefill + t.llm + t.depth + t.graph + t.decode;
  const double steps_s = t.llm + t.depth + t.graph;
  // Per image position the LLM's layers and the projector are read once and the depth
  // transformer once per code depth; lm_head and the embeddings are not used.
  const int64_t depth = model->depth_transformer->depth();
  const double bytes_per_position =
      parameter_bytes(*model, {"llm.model.layers.", "llm.model.norm.", "mm_projector."}) +
      static_cast<double>(depth) * parameter_bytes(*model, {"depth_transformer."});
  const double bandwidth = std::max(bandwidth_before, bandwidth_after);
  const double floor_s =
      static_cast<double>(model->tokens_per_image()) * bytes_per_position / bandwidth;
  const double per_batch_s = total / static_cast<double>(args.repeat);
  nlohmann::json report = {
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
      {"share_graph_steps", t.graph / total},
      {"share_decode", t.decode / total},
      {"llm_step_ms",
       1e3 * t.llm / static_cast<double>(args.repeat * (model->tokens_per_image() - 1))},
      {"weights_read_per_position_bytes", bytes_per_position},
      {"memory_bandwidth_gbps", bandwidth / 1e9},
      {"memory_bandwidth_gbps_before_after", {bandwidth_before / 1e9, bandwidth_after / 1e9}},
      {"floor_seconds_per_batch", floor_s},
      {"seconds_per_batch", per_batch_s},
      {"vs_floor", per_batch_s / floor_s},
      {"cuda_graphs", options.cuda_graphs && cuda_graphs_available(device)},
      {"position_ms", 1e3 * steps_s / static_cast<double>(args.repeat * model->tokens_per_image())},
      {"floor_position_ms", 1e3 * bytes_per_position / bandwidth},
      {"position_vs_floor", steps_s / static_cast<double>(args.repeat * model->tokens_per_image()) /
                                (bytes_per_position / bandwidth)},
      {"static_step", static_step},
      {"ops_per_position", counts["ops"]},
      {"top_level_ops_per_position", counts["top_level_ops"]},
      {"kernels_per_position", counts["kernels"]},
      {"host_syncs_per_position", counts["host_syncs"]},
      {"most_dispatched_per_position", counts["most_dispatched"]},
  };
  if (!args.eager.empty()) {
    report["eager"] = run_eager_baseline(
        args.eager,
        {"--mode", "generate", "--preset", preset_file(args.preset), "--device", device.str(),
         "--dtype", dtype_name(dtype), "--batch", std::to_string(args.batch), "--repeat",
         std::to_string(args.repeat), "--cfg", std::to_string(options.cfg_scale)});
    // The baseline stops at codes: compare without the pixel decoder.
    if (report["eager"].contains("images_per_s")) {
      const double codes_per_s = static_cast<double>(args.batch * args.repeat) / (total - t.decode);
      report["images_per_s_without_pixel_decode"] = codes_per_s;
      report["speedup_vs_eager"] = codes_per_s / report["eager"]["images_per_s"].get<double>();
    }
  }
  std::printf("%s\n", report.dump(2).c_str());
}

}  // namespace

void add_bench_generate_command(CLI::App& bench) {
  auto args = std::make_shared<BenchArgs>();
  CLI::App* cmd = bench.add_subcommand(
      "generate", "Text-to-image speed: images/s, LLM tokens/s and the share of each part");
  add_bench_model_options(cmd, *args);
  cmd->add_option("--batch", args->batch, "Images generated together")->capture_default_str();
  cmd->add_option("--repeat", args->repeat, "Timed runs after one warm-up")->capture_default_str();
  cmd->add_option("--cfg", args->image.cfg_scale, "Guidance scale")->capture_default_str();
  cmd->add_option("--cfg-layout", args->layout, "halves or interleaved")->capture_default_str();
  cmd->add_option("--cuda-graphs", args->cuda_graphs,
                  "on: replay each image position from a CUDA graph (CUDA only)")
      ->check(CLI::IsMember({"on", "off"}))
      ->capture_default_str();
  cmd->callback([args] {
    check_bench_model(*args, "vilau bench generate");
    bench_generate(*args);
  });
}

}  // namespace vilau::cli
