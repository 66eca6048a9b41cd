// `vilau bench decode`: understanding decode speed (prefill of an image prompt, then one
// greedy token per step with the LLM's KV cache) against the weight-streaming floor.
#include <torch/torch.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "bench_common.h"
#include "commands.h"
#include "presets.h"
#include "vilau/core/error.h"
#include "vilau/infer/batching.h"
#include "vilau/infer/runtime.h"
#include "vilau/infer/text_generation.h"

namespace vilau::cli {

namespace {

struct DecodeArgs : BenchModel {
  std::string batches = "1,16";
  int64_t prompt_length = 48, new_tokens = 128, repeat = 1;
};

struct DecodeTimes {
  double prefill = 0, steps = 0;
};

// The engine's decode path (TextGenerator::generate) without detokenisation, so a random
// preset needs no tokenizer: a left-padded prompt with one image as codes, a prefill into a
// static cache, then argmax -> embed -> one LLM step per token.
DecodeTimes decode_once(VilaUImpl& model, int64_t batch, const DecodeArgs& args,
                        at::Device device) {
  torch::NoGradGuard no_grad;
  LlamaForCausalLMImpl& llm = *model.llm;
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
  DecodeTimes t;
  double start = device_now(device);
  const ExpandedInputs in = model.expand(mb, Padding::left);
  const at::Tensor weight = llm.model->embed_tokens->weight;
  KvCache cache(llm.config(), batch, in.inputs_embeds.size(1) + args.new_tokens,
                weight.scalar_type(), device);
  at::Tensor hidden =
      llm.hidden_states(in.inputs_embeds, in.position_ids, in.attention_mask, &cache);
  at::Tensor positions = in.position_ids, mask = in.attention_mask;
  const double prefilled = device_now(device);
  t.prefill = prefilled - start;
  for (int64_t step = 0; step < args.new_tokens; ++step) {
    const at::Tensor next = llm.logits(hidden.select(1, -1)).argmax(-1);
    // The engine reads every token on the host for EOS and stop strings.
    (void)next.cpu();
    positions = positions.select(1, -1).unsqueeze(1) + 1;
    mask = at::cat({mask, at::ones({batch, 1}, mask.options())}, 1);
    hidden = llm.hidden_states(llm.embed(next.unsqueeze(1)), positions, mask, &cache);
  }
  t.steps = device_now(device) - prefilled;
  return t;
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
  const double bandwidth = memory_bandwidth(device);
  const double floor_ms = 1e3 * bytes / bandwidth;
  nlohmann::json runs = nlohmann::json::array();
  for (const int64_t batch : batches) {
    decode_once(*model, batch, args, device);  // warm-up
    DecodeTimes best{1e30, 1e30};
    for (int64_t r = 0; r < args.repeat; ++r) {
      const DecodeTimes t = decode_once(*model, batch, args, device);
      best.prefill = std::min(best.prefill, t.prefill);
      best.steps = std::min(best.steps, t.steps);
    }
    const double step_ms = 1e3 * best.steps / static_cast<double>(args.new_tokens);
    nlohmann::json run = {
        {"batch", batch},
        {"prefill_ms", 1e3 * best.prefill},
        {"step_ms", step_ms},
        {"tokens_per_s", static_cast<double>(batch * args.new_tokens) / best.steps},
        {"step_vs_floor", step_ms / floor_ms}};
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
      {"floor_step_ms", floor_ms},
      {"detokenisation", "excluded"},
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
  cmd->callback([args] {
    check_bench_model(*args, "vilau bench decode");
    bench_decode(*args);
  });
}

}  // namespace vilau::cli
