// Pretraining, SFT and fine-tuning of the unified model (SPEC §3.6, §6): the tower frozen,
// the LLM, projector and depth transformer trained on the text and visual losses.
#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>

#include "run.h"
#include "vilau/core/error.h"
#include "vilau/model/vila_u.h"
#include "vilau/train/parallel_optimizer.h"

namespace vilau::train_detail {

namespace {

VilaU build_model(const Run& run) {
  if (!run.train.init.empty()) {
    return load_vila_u(run.train.init, run.dtype, run.device);
  }
  if (!run.config.model) {
    throw ConfigError(
        describe("run config", "a model", "train.init or a 'model' section", "neither"));
  }
  // Every rank draws the same initial weights from the same seed.
  torch::manual_seed(static_cast<uint64_t>(run.train.seed));
  VilaU model(*run.config.model);
  model->to(run.device, run.dtype);
  return model;
}

void check_data_fits(const data::DataConfig& data, const VilaUImpl& model) {
  const int64_t size = model.config().vision_tower.vision.image_size;
  config_check(data.image_size == size, "data.image_size", std::to_string(size) + ", the tower's",
               std::to_string(data.image_size));
  config_check(data.tokens_per_image == model.tokens_per_image(), "data.tokens_per_image",
               std::to_string(model.tokens_per_image()) + ", the tower's grid",
               std::to_string(data.tokens_per_image));
}

void load_weights(VilaUImpl& model, const TensorMap& weights) {
  model.load([&weights](const std::string& name) {
    const auto it = weights.find(name);
    return it == weights.end() ? at::Tensor() : it->second;
  });
}

// The model's weights in the official names on rank 0, every rank taking part in gathering
// what ZeRO-3 shards away (copied to the host one unit at a time); other ranks get an empty
// map. Whole weights are the live tensors, which the writers copy to the host one by one,
// so the model never exists twice.
std::map<std::string, at::Tensor> gathered_weights(const Run& run, VilaUImpl& model,
                                                   ParallelOptimizer& optimizer) {
  std::map<std::string, at::Tensor> weights;
  if (run.is_main()) weights = model.official_state_dict();
  optimizer.for_each_sharded_parameter([&](const std::string& name, const at::Tensor& value) {
    if (run.is_main()) weights[VilaUImpl::official_name(name)] = value.detach().cpu().clone();
  });
  return weights;
}

}  // namespace

TrainSummary train_multimodal(Run& run, const TrainOptions& options) {
  const TrainConfig& tc = run.train;
  const data::DataConfig& dc = *run.config.data;
  VilaU model = build_model(run);
  check_data_fits(dc, *model);
  model->llm->set_activation_checkpointing(tc.activation_checkpointing);
  const Tokenizer tokenizer = Tokenizer::load(run.tokenizer_dir());
  TrainSummary summary;
  // Weights load before the optimizer takes its master copy (and ZeRO-3 shards them).
  const std::optional<io::TrainingState> resumed = run.resume(&summary.resumed_from);
  if (resumed) load_weights(*model, as_map(resumed->model));
  ParallelOptimizer optimizer(select_trainable(*model, tc.trainable_modules()), tc.optimizer,
                              tc.distributed, run.group, run.device);
  optimizer.inject_faults(options.faults);
  shard_blocks(*model, optimizer);

  data::DataPosition position;
  if (resumed) {
    optimizer.load_shard(summary.resumed_from, "optimizer");
    run.restore_rng(*resumed);
    position = run.position_of(*resumed);
    summary.first_step = resumed->step;
    spdlog::info("resumed from {} at step {}", summary.resumed_from, resumed->step);
  }
  data::DataLoader loader(dc, tokenizer, run.group.rank(), run.group.world_size(), position);
  model->train();

  const int64_t params = optimizer.parameters();
  spdlog::info("stage {}: {} trainable parameters, {} rank(s), ZeRO-{}, {} on {}", tc.stage, params,
               run.group.world_size(), tc.distributed.zero_stage,
               run.dtype == at::kBFloat16 ? "bf16" : "fp32", run.device.str());
  ProgressBar bar("train " + tc.stage, tc.max_steps, "step", summary.first_step,
                  options.progress && run.is_main());
  int64_t step = summary.first_step;
  const auto started = std::chrono::steady_clock::now();
  int64_t tokens_done = 0, samples_done = 0;
  while (step < tc.max_steps) {
    // Loss, text and visual parts and LLM tokens, summed on the device: one sync per step.
    at::Tensor totals = at::zeros({4}, at::TensorOptions().dtype(at::kDouble).device(run.device));
    int64_t samples = 0;
    data::DataPosition after;
    for (int64_t micro = 0; micro < tc.grad_accum; ++micro) {
      data::DataBatch batch = Run::next_batch(loader);
      after = batch.position;
      batch.batch.segment_ids = batch.segment_ids;
      const ExpandedInputs inputs = model->expand(run.to_device(batch.batch));
      const VilaULoss loss = model->loss(inputs, tc.loss_weights);
      optimizer.backward(loss.loss / static_cast<double>(tc.grad_accum),
                         micro == tc.grad_accum - 1);
      totals +=
          at::stack({loss.loss.detach().to(at::kDouble), loss.text_loss.detach().to(at::kDouble),
                     loss.visual_loss.detach().to(at::kDouble),
                     inputs.attention_mask.ne(0).sum().to(at::kDouble)});
      samples += batch.batch.input_ids.size(0);
    }
    const at::Tensor local = totals.cpu();
    const auto tokens = static_cast<int64_t>(local[3].item<double>());
    const bool finite = std::isfinite(local[0].item<double>());
    // Means over micro-batches, then over ranks.
    at::Tensor means = local.slice(0, 0, 3) / static_cast<double>(tc.grad_accum);
    run.group.all_reduce_mean(means);
    const double factor =
        cosine_lr_factor(step, tc.max_steps, tc.optimizer.warmup_ratio, tc.optimizer.min_lr_ratio);
    const ParallelOptimizer::Step result = optimizer.step(factor, finite);
    ++step;
    if (options.after_step) options.after_step(step, optimizer);
    const double loss = means[0].item<double>();
    summary.losses.push_back(loss);
    if (result.skipped) run.count_skipped(summary, step, result.grad_norm);
    tokens_done += tokens * run.group.world_size();
    samples_done += samples * run.group.world_size();
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    if (step % tc.log_every == 0 || step == tc.max_steps) {
      const double lr = tc.optimizer.lr * factor;
      run.log({{"step", step},
               {"loss", loss},
               {"text_loss", means[1].item<double>()},
               {"visual_loss", means[2].item<double>()},
               {"lr", lr},
               {"grad_norm", result.grad_norm},
               {"skipped", result.skipped},
               {"tokens_per_s", static_cast<double>(tokens_done) / elapsed},
               {"samples_per_s", static_cast<double>(samples_done) / elapsed},
               {"elapsed_s", elapsed}});
      char status[160];
      std::snprintf(status, sizeof status, "loss %.4f lr %.2e %.0f tok/s %.2f samples/s", loss, lr,
                    static_cast<double>(tokens_done) / elapsed,
                    static_cast<double>(samples_done) / elapsed);
      bar.update(step, status);
    }
    const bool last = step == tc.max_steps;
    if (step == options.stop_after_step && !last) {
      summary.last_step = step;
      return summary;
    }
    if (run.checkpoint_due(step)) {
      io::TrainingState state;
      state.step = step;
      state.model = as_named(gathered_weights(run, *model, optimizer));
      state.scheduler = {{"type", "cosine"},
                         {"step", step},
                         {"total_steps", tc.max_steps},
                         {"warmup_ratio", tc.optimizer.warmup_ratio}};
      run.save(std::move(state), after,
               [&optimizer](const std::string& folder) { optimizer.save_shard(folder, "optimizer"); });
    }
  }
  bar.finish();
  summary.last_step = step;
  if (tc.export_at_end) {
    const std::map<std::string, at::Tensor> weights = gathered_weights(run, *model, optimizer);
    if (run.is_main()) summary.export_dir = run.export_model(model->config(), weights);
  }
  run.group.barrier();
  return summary;
}

}  // namespace vilau::train_detail

namespace vilau {

void shard_blocks(VilaUImpl& model, ParallelOptimizer& optimizer) {
  if (optimizer.units() == nullptr) return;
  const auto buckets = [&optimizer](const std::string& prefix, int64_t count) {
    std::vector<int64_t> out;
    for (int64_t i = 0; i < count; ++i) {
      out.push_back(optimizer.bucket_of_unit(prefix + std::to_string(i)));
    }
    return out;
  };
  const auto llm = buckets("llm.model.layers.", model.config().llm.num_layers);
  if (!llm.empty() && llm.front() >= 0) {
    model.llm->set_block_wrapper(optimizer.units()->wrapper(llm));
  }
  const auto depth = buckets("depth_transformer.head_transformer.blocks.",
                             static_cast<int64_t>(model.depth_transformer->head_transformer->blocks->size()));
  if (!depth.empty() && depth.front() >= 0) {
    model.depth_transformer->set_block_wrapper(optimizer.units()->wrapper(depth));
  }
  const int64_t projector = optimizer.bucket_of_unit("mm_projector");
  if (projector >= 0) model.set_projector_wrapper(optimizer.units()->wrapper({projector}));
}

}  // namespace vilau
