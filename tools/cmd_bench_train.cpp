// `vilau bench train`: training throughput and MFU of the unified model's step (LLM,
// projector and depth transformer on text and visual losses) with the trainer's own
// optimizer path: gradient sync, clipping and fused AdamW on fp32 master weights.
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "bench_common.h"
#include "commands.h"
#include "presets.h"
#include "vilau/core/error.h"
#include "vilau/infer/runtime.h"
#include "vilau/train/parallel_optimizer.h"
#include "vilau/train/trainer.h"

namespace vilau::cli {

namespace {

struct TrainBenchArgs {
  std::string preset = "7b-256", device = "cpu", dtype = "auto", eager;
  int64_t llm_layers = 0, batch = 1, seq_len = 1024, steps = 5, warmup = 2;
  double peak_tflops = 0;
  bool checkpointing = false;
  DistributedConfig distributed;
};

// Restarts the peak-resident counter, so that the peak measures the training steps and not
// the set-up (building the random model and the optimizer's copies).
void reset_peak_resident() { std::ofstream("/proc/self/clear_refs") << "5"; }

// This process's peak resident memory (VmHWM) in bytes; 0 where /proc has no such line.
int64_t peak_resident_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  return 0;
}

// Rows of one image (as codes) between text, with text labels and the image as a visual
// target: both losses and every trainable module run.
MultimodalBatch random_batch(const VilaUImpl& model, const TrainBenchArgs& args,
                             at::Device device) {
  const int64_t positions = model.tokens_per_image();
  const int64_t text = args.seq_len - positions;
  const int64_t vocab = model.config().llm.vocab_size;
  at::Tensor ids = torch::randint(3, vocab - 8, {args.batch, text + 1}, torch::kLong);
  ids.select(1, 0).fill_(1);
  ids.select(1, text / 2).fill_(kImageTokenIndex);
  at::Tensor labels = ids.clone();
  labels.select(1, 0).fill_(kIgnoreIndex);
  labels.select(1, text / 2).fill_(kIgnoreIndex);
  MultimodalBatch batch;
  batch.input_ids = ids.to(device);
  batch.attention_mask = torch::ones_like(batch.input_ids);
  batch.labels = labels.to(device);
  const auto side = static_cast<int64_t>(std::lround(std::sqrt(positions)));
  batch.image_codes = torch::randint(0, model.config().vision_tower.quantizer.codebook_size,
                                     {args.batch, side, side, model.depth_transformer->depth()},
                                     torch::dtype(torch::kLong).device(device));
  return batch;
}

void bench_train(const TrainBenchArgs& args) {
  config_check(args.batch > 0 && args.steps > 0 && args.warmup >= 0, "--batch/--steps/--warmup",
               "positive, positive, non-negative",
               std::to_string(args.batch) + "/" + std::to_string(args.steps) + "/" +
                   std::to_string(args.warmup));
  ModelConfig config = load_preset(args.preset);
  if (args.llm_layers > 0) config.llm.num_layers = args.llm_layers;
  config_check(
      args.seq_len >
          (config.vision_tower.vision.image_size / config.vision_tower.vision.patch_size) *
                  (config.vision_tower.vision.image_size / config.vision_tower.vision.patch_size) +
              8,
      "--seq-len", "room for one image and some text", std::to_string(args.seq_len));
  const DistEnv env = read_dist_env();
  const at::Device device = parse_device(args.device);
  const at::ScalarType dtype = parse_dtype(args.dtype, device);
  VilaU model = random_vila_u(config, device, dtype, 0);
  model->train();
  model->vision_tower->eval();
  model->llm->set_activation_checkpointing(args.checkpointing);
  const ProcessGroup group(env, device, std::chrono::seconds(600));
  OptimizerConfig optimizer_config;
  optimizer_config.lr = 1e-5;
  args.distributed.validate("bench train");
  ParallelOptimizer optimizer(
      select_trainable(*model, {"llm", "mm_projector", "depth_transformer"}), optimizer_config,
      args.distributed, group, device);
  shard_blocks(*model, optimizer);
  const MultimodalBatch batch = random_batch(*model, args, device);
  double start = 0;
  reset_peak_resident();
  for (int64_t step = 0; step < args.warmup + args.steps; ++step) {
    if (step == args.warmup) start = device_now(device);
    const VilaULoss loss = model->loss(batch);
    optimizer.backward(loss.loss, true);
    optimizer.step(1.0, true);
  }
  const double seconds = device_now(device) - start;
  // Every rank's peak resident memory, next to the bytes of what each rank holds.
  at::Tensor mine = at::tensor({peak_resident_bytes(), optimizer.parameter_bytes(),
                                optimizer.gradient_bytes(), optimizer.state_bytes()},
                               at::kLong);
  at::Tensor all = at::empty({4 * env.world_size}, at::kLong);
  group.all_gather(all, mine);
  nlohmann::json ranks = nlohmann::json::array();
  for (int64_t r = 0; r < env.world_size; ++r) {
    ranks.push_back({{"rank", r},
                     {"peak_resident_bytes_in_steps", all[4 * r].item<int64_t>()},
                     {"parameter_bytes", all[4 * r + 1].item<int64_t>()},
                     {"gradient_bytes", all[4 * r + 2].item<int64_t>()},
                     {"optimizer_state_bytes", all[4 * r + 3].item<int64_t>()}});
  }
  const double tokens = static_cast<double>(args.batch * args.seq_len * args.steps);
  const double tokens_per_s = tokens / seconds * static_cast<double>(env.world_size);
  // 6 FLOPs per parameter and token (forward and backward), plus causal attention's
  // 6 * layers * hidden * seq (half of the full 12, as the mask skips half the scores).
  const auto params = static_cast<double>(optimizer.parameters());
  const double flops_per_token =
      6 * params +
      6.0 * static_cast<double>(config.llm.num_layers * config.llm.hidden_size * args.seq_len);
  std::optional<double> peak = bf16_peak_flops(device);
  if (args.peak_tflops > 0) peak = args.peak_tflops * 1e12;
  nlohmann::json report = {
      {"bench", "train"},
      {"preset", args.preset},
      {"llm_layers", config.llm.num_layers},
      {"trainable_parameters", params},
      {"device", device.str()},
      {"dtype", dtype_name(dtype)},
      {"world_size", env.world_size},
      {"zero_stage", args.distributed.zero_stage},
      {"bucket_mb", args.distributed.bucket_mb},
      {"reduce_dtype", args.distributed.reduce_dtype},
      {"ranks", ranks},
      {"batch_per_rank", args.batch},
      {"seq_len", args.seq_len},
      {"activation_checkpointing", args.checkpointing},
      {"steps", args.steps},
      {"step_ms", 1e3 * seconds / static_cast<double>(args.steps)},
      {"tokens_per_s", tokens_per_s},
      {"model_tflops_per_s_per_rank", flops_per_token * tokens_per_s / env.world_size / 1e12},
      {"mfu", peak ? nlohmann::json(flops_per_token * tokens_per_s / env.world_size / *peak)
                   : nlohmann::json(nullptr)}};
  if (!args.eager.empty()) {
    std::vector<std::string> eager_args = {"--mode",    "train",
                                           "--preset",  preset_file(args.preset),
                                           "--device",  device.str(),
                                           "--dtype",   dtype_name(dtype),
                                           "--batch",   std::to_string(args.batch),
                                           "--seq-len", std::to_string(args.seq_len),
                                           "--repeat",  std::to_string(args.steps)};
    if (args.llm_layers > 0) {
      eager_args.insert(eager_args.end(), {"--layers", std::to_string(args.llm_layers)});
    }
    report["eager"] = run_eager_baseline(args.eager, eager_args);
    if (report["eager"].contains("tokens_per_s")) {
      report["speedup_vs_eager"] = tokens_per_s / report["eager"]["tokens_per_s"].get<double>();
    }
  }
  if (group.rank() == 0) std::printf("%s\n", report.dump(2).c_str());
}

}  // namespace

void add_bench_train_command(CLI::App& bench) {
  auto args = std::make_shared<TrainBenchArgs>();
  CLI::App* cmd = bench.add_subcommand(
      "train", "Training step throughput (tokens/s) and MFU against the device's bf16 peak");
  cmd->add_option("--preset", args->preset, "Model preset (random weights)")->capture_default_str();
  cmd->add_option("--llm-layers", args->llm_layers,
                  "Override the LLM depth (e.g. 4 for a ~1B model from 7b-256)");
  cmd->add_option("--batch", args->batch, "Sequences per rank and step")->capture_default_str();
  cmd->add_option("--seq-len", args->seq_len, "Positions per sequence, image included")
      ->capture_default_str();
  cmd->add_option("--steps", args->steps, "Timed steps")->capture_default_str();
  cmd->add_option("--warmup", args->warmup, "Untimed steps first")->capture_default_str();
  cmd->add_flag("--activation-checkpointing", args->checkpointing,
                "Recompute each LLM layer in backward");
  cmd->add_option("--zero-stage", args->distributed.zero_stage,
                  "0 (DDP), 1 (optimizer state sharded), 2 (gradients too) or 3 (parameters too)")
      ->capture_default_str();
  cmd->add_option("--bucket-mb", args->distributed.bucket_mb, "Gradient bucket size, fp32 MB")
      ->capture_default_str();
  cmd->add_option("--reduce-dtype", args->distributed.reduce_dtype,
                  "What gradient collectives move: fp32 or bf16")
      ->capture_default_str();
  cmd->add_option("--peak-tflops", args->peak_tflops,
                  "The device's dense bf16 peak, when it is not in the built-in table");
  cmd->add_option("--device", args->device, "cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_option("--dtype", args->dtype, "auto (bf16 on GPU, fp32 on CPU), bf16, fp16, fp32")
      ->capture_default_str();
  cmd->add_option("--eager", args->eager, "Also time the eager PyTorch baseline with this python");
  cmd->callback([args] { bench_train(*args); });
}

}  // namespace vilau::cli
