// Pretraining, SFT and fine-tuning of the unified model (SPEC §3.6, §6): the tower frozen,
// the LLM, projector and depth transformer trained on the text and visual losses.
#include <spdlog/spdlog.h>

#include <cmath>
#include <memory>
#include <optional>

#include "loop.h"
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

// The stage's state between steps: the model, its optimizer and the data.
class MultimodalStage final : public Stage {
 public:
  MultimodalStage(Run& run, const TrainOptions& options, TrainSummary& summary)
      : run_(run),
        tc_(run.train),
        model_(build_model(run)),
        tokenizer_(Tokenizer::load(run.tokenizer_dir())) {
    const data::DataConfig& dc = *run.config.data;
    check_data_fits(dc, *model_);
    model_->llm->set_activation_checkpointing(tc_.activation_checkpointing);
    // Weights load before the optimizer takes its master copy (and ZeRO-3 shards them).
    const std::optional<io::TrainingState> resumed = run.resume(&summary.resumed_from);
    if (resumed) load_weights(*model_, as_map(resumed->model));
    optimizer_ =
        std::make_unique<ParallelOptimizer>(select_trainable(*model_, tc_.trainable_modules()),
                                            tc_.optimizer, tc_.distributed, run.group, run.device);
    optimizer_->inject_faults(options.faults);
    shard_blocks(*model_, *optimizer_);
    data::DataPosition position;
    if (resumed) {
      optimizer_->load_shard(summary.resumed_from, "optimizer");
      run.restore_rng(*resumed);
      position = run.position_of(*resumed);
      summary.first_step = resumed->step;
      spdlog::info("resumed from {} at step {}", summary.resumed_from, resumed->step);
    }
    loader_ = std::make_unique<data::DataLoader>(dc, tokenizer_, run.group.rank(),
                                                 run.group.world_size(), position);
    model_->train();
    spdlog::info("stage {}: {} trainable parameters, {} rank(s), ZeRO-{}, {} on {}", tc_.stage,
                 optimizer_->parameters(), run.group.world_size(), tc_.distributed.zero_stage,
                 run.dtype == at::kBFloat16 ? "bf16" : "fp32", run.device.str());
  }

  Outcome step(int64_t, double lr_factor, bool) override {
    // Loss, text and visual parts and LLM tokens, summed on the device: one sync per step.
    at::Tensor totals = at::zeros({4}, at::TensorOptions().dtype(at::kDouble).device(run_.device));
    Outcome out;
    for (int64_t micro = 0; micro < tc_.grad_accum; ++micro) {
      data::DataBatch batch = Run::next_batch(*loader_);
      out.position = batch.position;
      batch.batch.segment_ids = batch.segment_ids;
      const ExpandedInputs inputs = model_->expand(run_.to_device(batch.batch));
      const VilaULoss loss = model_->loss(inputs, tc_.loss_weights);
      optimizer_->backward(loss.loss / static_cast<double>(tc_.grad_accum),
                           micro == tc_.grad_accum - 1);
      totals +=
          at::stack({loss.loss.detach().to(at::kDouble), loss.text_loss.detach().to(at::kDouble),
                     loss.visual_loss.detach().to(at::kDouble),
                     inputs.attention_mask.ne(0).sum().to(at::kDouble)});
      out.samples += batch.batch.input_ids.size(0) * run_.group.world_size();
    }
    const at::Tensor local = totals.cpu();
    out.tokens = static_cast<int64_t>(local[3].item<double>()) * run_.group.world_size();
    const bool finite = std::isfinite(local[0].item<double>());
    // Means over micro-batches, then over ranks.
    at::Tensor means = local.slice(0, 0, 3) / static_cast<double>(tc_.grad_accum);
    run_.group.all_reduce_mean(means);
    out.update = optimizer_->step(lr_factor, finite);
    out.loss = means[0].item<double>();
    out.metrics = {{"text_loss", means[1].item<double>()},
                   {"visual_loss", means[2].item<double>()}};
    return out;
  }

  io::NamedTensors weights() override {
    return as_named(gathered_weights(run_, *model_, *optimizer_));
  }

  void write_shards(const std::string& folder) override {
    optimizer_->save_shard(folder, "optimizer");
  }

  std::string export_model() override {
    const std::map<std::string, at::Tensor> weights = gathered_weights(run_, *model_, *optimizer_);
    return run_.is_main() ? run_.export_model(model_->config(), weights) : "";
  }

  const ParallelOptimizer& optimizer() const override { return *optimizer_; }

 private:
  Run& run_;
  const TrainConfig& tc_;
  VilaU model_;
  Tokenizer tokenizer_;  // the loader reads through it
  std::unique_ptr<ParallelOptimizer> optimizer_;
  std::unique_ptr<data::DataLoader> loader_;
};

}  // namespace

TrainSummary train_multimodal(Run& run, const TrainOptions& options) {
  TrainSummary summary;
  MultimodalStage stage(run, options, summary);
  return run_loop(run, stage, std::move(summary), options);
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
  const auto depth =
      buckets("depth_transformer.head_transformer.blocks.",
              static_cast<int64_t>(model.depth_transformer->head_transformer->blocks->size()));
  if (!depth.empty() && depth.front() >= 0) {
    model.depth_transformer->set_block_wrapper(optimizer.units()->wrapper(depth));
  }
  const int64_t projector = optimizer.bucket_of_unit("mm_projector");
  if (projector >= 0) model.set_projector_wrapper(optimizer.units()->wrapper({projector}));
}

}  // namespace vilau
