// `vilau bench decode`: understanding decode speed (prefill of an image prompt, then one
// greedy token per step with the LLM's KV cache) against the weight-streaming floor.
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "bench_common.h"
#include "commands.h"
#include "presets.h"
#include "vilau/core/error.h"
#include "vilau/infer/batching.h"
#include "vilau/infer/runtime.h"
#include "vilau/infer/step_graph.h"
#include "vilau/infer/text_generation.h"

namespace vilau::cli {

namespace {

struct DecodeArgs : BenchModel {
  std::string batches = "1,16";
  int64_t prompt_length = 48, new_tokens = 128, repeat = 1;
  std::string cuda_graphs = "on";
};

struct DecodeTimes {
  double prefill = 0, steps = 0;
};

// The engine's decode path (TokenDecoder, as TextGenerator::generate runs it) without
// detokenisation, so a random preset needs no tokenizer: a left-padded prompt with one
// image as codes, a prefill into a static cache, then per token the host reads the tokens
// (as the engine does, for EOS and stop strings) and one greedy step runs.
ExpandedInputs prompt(VilaUImpl& model, int64_t batch, const DecodeArgs& args, at::Device device) {
  const int64_t vocab = model.config().llm.vocab_size;
  std::vector<int64_t> ids = {1};
  for (int64_t i = 1; i < args.prompt_length; ++i) {
    ids.push_back(i == 8 ? kImageTokenIndex : 3 + (i * 7919) % (vocab - 8));
  }
  MultimodalBatch mb = left_padded_batch(std::vector<std::vector<int64_t>>(batch, ids), 0, device);
  const int64_t side = static_cast<int64_t>(std::lround(std::sqrt(model.tokens_per_image())));
  mb.image_codes = torch::randint(0, model.config().vision_tower.quantizer.codebook_size,
                                  {batch, side, side, model.depth_transformer->depth()},
                                  torch::dtype(torch::kLong).device(device));
  return model.expand(mb, Padding::left);
}

DecodeTimes decode_once(VilaUImpl& model, int64_t batch, const DecodeArgs& args, int64_t new_tokens,
                        at::Device device) {
  torch::NoGradGuard no_grad;
  DecodeTimes t;
  double start = device_now(device);
  at::Generator rng = make_generator(device, 0);
  TokenDecoder decoder(model, prompt(model, batch, args, device), new_tokens, {0.0, 0, 1.0}, rng,
                       true, args.cuda_graphs == "on");
  const double prefilled = device_now(device);
  t.prefill = prefilled - start;
  for (int64_t step = 0; step < new_tokens; ++step) {
    (void)decoder.tokens().cpu();
    decoder.step();
  }
  t.steps = device_now(device) - prefilled;
  return t;
}

// The eager step traced at two positions (graphs replay without dispatching anything).
bool decode_is_static(VilaUImpl& model, const DecodeArgs& args, at::Device device) {
  torch::NoGradGuard no_grad;
  at::Generator rng = make_generator(device, 0);
  TokenDecoder decoder(model, prompt(model, 1, args, device), 8, {0.0, 0, 1.0}, rng, true, false);
  return is_static_step(
      [&] {
        (void)decoder.tokens().cpu();
        decoder.step();
      },
      2, 6);
}

std::vector<int64_t> parse_batches(const std::string& list) {
  std::vector<int64_t> out;
  std::stringstream in(list);
  for (std::string item; std::getline(in, item, ',');) {
    try {
      out.push_back(std::stoll(item));
    } catch (const std::exception&) {
      out.push_back(0);
    }
    config_check(out.back() > 0, "--batch", "a comma-separated list of positive counts", list);
  }
  return out;
}

void bench_decode(const DecodeArgs& args) {
  config_check(args.prompt_length > 8 && args.new_tokens > 0 && args.repeat > 0,
               "--prompt-length/--new-tokens/--repeat", "more than 8, positive, positive",
               std::to_string(args.prompt_length) + "/" + std::to_string(args.new_tokens) + "/" +
                   std::to_string(args.repeat));
  const std::vector<int64_t> batches = parse_batches(args.batches);
  const at::Device device = parse_device(args.device);
  const at::ScalarType dtype = parse_dtype(args.dtype, device);
  VilaU model = args.model.empty() ? random_vila_u(load_preset(args.preset), device, dtype, 0)
                                   : load_inference_model(args.model, device, dtype).model;
  // Per token every LLM layer, the final norm and lm_head are read once.
  const double bytes =
      parameter_bytes(*model, {"llm.model.layers.", "llm.model.norm.", "llm.lm_head."});
  const double bandwidth_before = memory_bandwidth(device);
  nlohmann::json runs = nlohmann::json::array();
  std::vector<double> step_ms_of_runs, bandwidth_after;
  for (const int64_t batch : batches) {
    decode_once(*model, batch, args, args.new_tokens, device);  // warm-up
    DecodeTimes best{1e30, 1e30};
    for (int64_t r = 0; r < args.repeat; ++r) {
      const DecodeTimes t = decode_once(*model, batch, args, args.new_tokens, device);
      best.prefill = std::min(best.prefill, t.prefill);
      best.steps = std::min(best.steps, t.steps);
    }
    const double step_ms = 1e3 * best.steps / static_cast<double>(args.new_tokens);
    nlohmann::json run = {
        {"batch", batch},
        {"prefill_ms", 1e3 * best.prefill},
        {"step_ms", step_ms},
        {"tokens_per_s", static_cast<double>(batch * args.new_tokens) / best.steps}};
    step_ms_of_runs.push_back(step_ms);
    bandwidth_after.push_back(memory_bandwidth(device));
    // Per token: a run of 16 tokens less a run of 8, so that the prefill cancels.
    const nlohmann::json counts = counts_per_step(
        [&](int64_t tokens) { decode_once(*model, batch, args, tokens, device); }, 8, 16, 8.0);
    run["ops_per_token"] = counts["ops"];
    run["top_level_ops_per_token"] = counts["top_level_ops"];
    run["kernels_per_token"] = counts["kernels"];
    run["host_syncs_per_token"] = counts["host_syncs"];
    run["most_dispatched_per_token"] = counts["most_dispatched"];
    if (!args.eager.empty()) {
      run["eager"] = run_eager_baseline(
          args.eager,
          {"--mode", "decode", "--preset", preset_file(args.preset), "--device", device.str(),
           "--dtype", dtype_name(dtype), "--batch", std::to_string(batch), "--repeat",
           std::to_string(args.repeat), "--prompt-length", std::to_string(args.prompt_length),
           "--new-tokens", std::to_string(args.new_tokens)});
      if (run["eager"].contains("tokens_per_s")) {
        run["speedup_vs_eager"] =
            run["tokens_per_s"].get<double>() / run["eager"]["tokens_per_s"].get<double>();
      }
    }
    runs.push_back(run);
  }
  const double bandwidth =
      std::max(bandwidth_before, *std::max_element(bandwidth_after.begin(), bandwidth_after.end()));
  const double floor_ms = 1e3 * bytes / bandwidth;
  for (size_t i = 0; i < runs.size(); ++i) runs[i]["step_vs_floor"] = step_ms_of_runs[i] / floor_ms;
  std::vector<double> measured = {bandwidth_before / 1e9};
  for (const double b : bandwidth_after) measured.push_back(b / 1e9);
  const nlohmann::json report = {
      {"bench", "decode"},
      {"model", args.model.empty() ? "preset:" + args.preset : args.model},
      {"device", device.str()},
      {"dtype", dtype_name(dtype)},
      {"prompt_length", args.prompt_length},
      {"prompt_positions", args.prompt_length - 1 + model->tokens_per_image()},
      {"new_tokens", args.new_tokens},
      {"weights_read_per_step_bytes", bytes},
      {"memory_bandwidth_gbps", bandwidth / 1e9},
      {"memory_bandwidth_gbps_measured", measured},
      {"floor_step_ms", floor_ms},
      {"detokenisation", "excluded"},
      {"cuda_graphs", args.cuda_graphs == "on" && cuda_graphs_available(device)},
      {"static_step", decode_is_static(*model, args, device)},
      {"runs", runs}};
  std::printf("%s\n", report.dump(2).c_str());
}

}  // namespace

void add_bench_decode_command(CLI::App& bench) {
  auto args = std::make_shared<DecodeArgs>();
  CLI::App* cmd = bench.add_subcommand(
      "decode", "Understanding decode: tokens/s per batch size and the weight-streaming floor");
  add_bench_model_options(cmd, *args);
  cmd->add_option("--batch", args->batches, "Comma-separated batch sizes")->capture_default_str();
  cmd->add_option("--prompt-length", args->prompt_length, "Prompt tokens (one is the image)")
      ->capture_default_str();
  cmd->add_option("--new-tokens", args->new_tokens, "Tokens decoded per row")
      ->capture_default_str();
  cmd->add_option("--repeat", args->repeat, "Timed runs after one warm-up; the best is reported")
      ->capture_default_str();
  cmd->add_option("--cuda-graphs", args->cuda_graphs,
                  "on: replay each token step from a CUDA graph (CUDA only)")
      ->check(CLI::IsMember({"on", "off"}))
      ->capture_default_str();
  cmd->callback([args] {
    check_bench_model(*args, "vilau bench decode");
    bench_decode(*args);
  });
}

}  // namespace vilau::cli
