// The tower stage the official repo never released (SPEC §2.6): SigLIP's contrastive loss
// against the text tower keeps the features aligned with text, while reconstruction,
// commitment, perceptual and (from a start step) adversarial losses teach the quantizer
// and pixel decoder to rebuild the image from the codes. Codebooks follow their EMA.
#include <spdlog/spdlog.h>

#include <cmath>
#include <map>
#include <memory>

#include "loop.h"
#include "run.h"
#include "vilau/core/error.h"
#include "vilau/model/init.h"
#include "vilau/model/official_checkpoint.h"
#include "vilau/train/parallel_optimizer.h"
#include "vilau/vision/losses.h"
#include "vilau/vision/vision_tower.h"

namespace vilau::train_detail {

namespace {

ModelConfig model_config(const Run& run) {
  if (!run.train.init.empty()) return OfficialCheckpoint::open(run.train.init).config();
  if (!run.config.model) {
    throw ConfigError(
        describe("run config", "a model", "train.init or a 'model' section", "neither"));
  }
  return *run.config.model;
}

std::vector<std::pair<std::string, at::Tensor>> prefixed(torch::nn::Module& module,
                                                         const std::string& prefix,
                                                         bool skip_codebooks) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : module.named_parameters()) {
    // Codebooks move by EMA, never by gradients.
    const bool codebook = skip_codebooks && p.key().rfind("quantizer.", 0) == 0;
    p.value().requires_grad_(!codebook);
    if (!codebook) out.emplace_back(prefix + p.key(), p.value());
  }
  return out;
}

// The tower, its discriminator and their optimizers between steps.
class TowerStage final : public Stage {
 public:
  TowerStage(Run& run, const TrainOptions& options, TrainSummary& summary)
      : run_(run),
        tc_(run.train),
        lc_(run.train.tower_losses),
        config_(model_config(run)),
        tokenizer_(Tokenizer::load(run.tokenizer_dir())) {
    torch::manual_seed(static_cast<uint64_t>(tc_.seed));
    tower_ = VisionTower(config_.vision_tower);
    if (!tc_.init.empty()) {
      const OfficialCheckpoint checkpoint = OfficialCheckpoint::open(tc_.init);
      tower_->load([&checkpoint](const std::string& name) {
        return checkpoint.tensor("vision_tower." + name);
      });
    }
    tower_->to(run.device, run.dtype);
    discriminator_ = PatchDiscriminator();
    discriminator_->to(run.device, run.dtype);
    if (!lc_.perceptual_weights.empty()) {
      perceptual_ = PerceptualLoss();
      perceptual_->load(lc_.perceptual_weights);
      perceptual_->to(run.device, run.dtype);
      perceptual_->eval();
      for (at::Tensor& p : perceptual_->parameters()) p.requires_grad_(false);
    }
    if (run.group.distributed()) {
      const ProcessGroup& group = run.group;
      ResidualQuantizerImpl::RankSync sync;
      sync.all_reduce_sum = [&group](at::Tensor& t) { group.all_reduce_sum(t); };
      sync.broadcast_from_first = [&group](at::Tensor& t) { group.broadcast(t, 0); };
      sync.first = group.rank() == 0;
      tower_->quantizer->set_rank_sync(std::move(sync));
    }
    const data::DataConfig& dc = *run.config.data;
    config_check(dc.image_size == config_.vision_tower.vision.image_size, "data.image_size",
                 std::to_string(config_.vision_tower.vision.image_size) + ", the tower's",
                 std::to_string(dc.image_size));
    generator_ =
        std::make_unique<ParallelOptimizer>(prefixed(*tower_, "vision_tower.", true), tc_.optimizer,
                                            tc_.distributed, run.group, run.device);
    OptimizerConfig disc_config = tc_.optimizer;
    disc_config.lr = tc_.discriminator_lr;
    critic_ =
        std::make_unique<ParallelOptimizer>(prefixed(*discriminator_, "discriminator.", false),
                                            disc_config, tc_.distributed, run.group, run.device);
    generator_->inject_faults(options.faults);
    last_layer_ = tower_->decoder->named_parameters()["decoder.conv_out.weight"];
    data::DataPosition position;
    if (auto state = run.resume(&summary.resumed_from)) {
      const TensorMap weights = as_map(state->model);
      const TensorLookup lookup = [&weights](const std::string& name) {
        const auto it = weights.find(name);
        return it == weights.end() ? at::Tensor() : it->second;
      };
      tower_->load([&lookup](const std::string& name) { return lookup("vision_tower." + name); });
      load_module(*discriminator_, lookup, "discriminator.");
      generator_->load_shard(summary.resumed_from, "generator");
      critic_->load_shard(summary.resumed_from, "discriminator");
      run.restore_rng(*state);
      position = run.position_of(*state);
      summary.first_step = state->step;
    }
    loader_ = std::make_unique<data::DataLoader>(dc, tokenizer_, run.group.rank(),
                                                 run.group.world_size(), position);
    tower_->train();
    discriminator_->train();
  }

  Outcome step(int64_t step, double lr_factor, bool log) override {
    const bool gan = lc_.gan_weight > 0 && step >= lc_.gan_start_step;
    const double accum = static_cast<double>(tc_.grad_accum);
    std::map<std::string, double> parts;
    double loss_sum = 0, disc_sum = 0;
    Outcome out;
    std::vector<at::Tensor> fakes, reals;
    for (int64_t micro = 0; micro < tc_.grad_accum; ++micro) {
      data::DataBatch batch = Run::next_batch(*loader_);
      out.position = batch.position;
      const at::Tensor pixels = batch.batch.images.to(run_.device, run_.dtype);
      const auto quantized = tower_->quantizer->forward(tower_->vision->grid(pixels));
      const at::Tensor reconstruction = tower_->decoder->forward(quantized.z_q);
      TowerLossTerms terms;
      const at::Tensor image_embeds = tower_->vision->forward(pixels).pooled;
      const at::Tensor text_embeds =
          tower_->text
              ->forward(siglip_text_ids(tokenizer_, batch.captions, config_.vision_tower.text)
                            .to(run_.device))
              .pooled;
      terms.contrastive =
          lc_.contrastive == "clip"
              ? clip_loss(image_embeds, text_embeds, tower_->logit_scale)
              : siglip_loss(image_embeds, text_embeds, tower_->logit_scale, tower_->logit_bias);
      terms.reconstruction = reconstruction_loss(reconstruction, pixels, lc_.reconstruction);
      terms.commitment = quantized.commitment_loss;
      if (perceptual_) terms.perceptual = perceptual_->forward(reconstruction, pixels).mean();
      at::Tensor adaptive;
      if (gan) {
        terms.generator = generator_loss(discriminator_->forward(reconstruction));
        at::Tensor nll = terms.reconstruction * lc_.reconstruction_weight;
        if (terms.perceptual.defined()) nll = nll + terms.perceptual * lc_.perceptual_weight;
        adaptive = adaptive_gan_weight(nll, terms.generator, last_layer_, lc_.gan_weight);
      }
      const at::Tensor loss = combine_tower_losses(terms, lc_, adaptive, step);
      generator_->backward(loss / accum, micro == tc_.grad_accum - 1);
      loss_sum += loss.item<double>();
      for (const auto& [name, t] :
           std::map<std::string, at::Tensor>{{"contrastive", terms.contrastive},
                                             {"reconstruction", terms.reconstruction},
                                             {"commitment", terms.commitment},
                                             {"perceptual", terms.perceptual},
                                             {"generator", terms.generator}}) {
        if (t.defined()) parts[name] += t.item<double>() / accum;
      }
      fakes.push_back(reconstruction.detach());
      reals.push_back(pixels);
      out.samples += pixels.size(0) * run_.group.world_size();
    }
    // The generator's backward reached the discriminator; its update uses only its own loss.
    for (at::Tensor& p : discriminator_->parameters()) p.mutable_grad() = at::Tensor();
    out.update = generator_->step(lr_factor, std::isfinite(loss_sum));
    if (gan) {
      for (size_t i = 0; i < fakes.size(); ++i) {
        const at::Tensor d_loss = hinge_discriminator_loss(discriminator_->forward(reals[i]),
                                                           discriminator_->forward(fakes[i]));
        critic_->backward(d_loss / static_cast<double>(fakes.size()), i + 1 == fakes.size());
        disc_sum += d_loss.item<double>() / static_cast<double>(fakes.size());
      }
      // Whether the critic trains depends on the step alone, so every rank agrees.
      critic_->step(lr_factor, std::isfinite(disc_sum));
    }
    out.loss = mean_over_ranks(run_.group, loss_sum / accum);
    if (log) {
      for (const auto& [name, value] : parts) {
        out.metrics[name + "_loss"] = mean_over_ranks(run_.group, value);
      }
      if (gan) out.metrics["discriminator_loss"] = mean_over_ranks(run_.group, disc_sum);
    }
    return out;
  }

  io::NamedTensors weights() override {
    TensorMap weights;
    for (auto& [name, t] : tower_->official_state_dict()) weights["vision_tower." + name] = t;
    add_module_tensors(weights, "discriminator.", *discriminator_);
    return as_named(weights);
  }

  void write_shards(const std::string& folder) override {
    generator_->save_shard(folder, "generator");
    critic_->save_shard(folder, "discriminator");
  }

  // A whole model folder, so that the next stage starts from it: the trained tower, and the
  // rest from train.init or freshly initialised.
  std::string export_model() override {
    if (!run_.is_main()) return "";
    std::map<std::string, at::Tensor> weights;
    if (!tc_.init.empty()) {
      weights = OfficialCheckpoint::open(tc_.init).load_all();
    } else {
      weights = init_weights(config_, static_cast<uint64_t>(tc_.seed));
    }
    for (auto& [name, t] : tower_->official_state_dict()) {
      weights["vision_tower." + name] = t.detach().cpu().to(at::kBFloat16);
    }
    return run_.export_model(config_, weights);
  }

  const ParallelOptimizer& optimizer() const override { return *generator_; }

 private:
  Run& run_;
  const TrainConfig& tc_;
  const TowerLossConfig& lc_;
  const ModelConfig config_;
  Tokenizer tokenizer_;  // the loader reads through it
  VisionTower tower_{nullptr};
  PatchDiscriminator discriminator_{nullptr};
  PerceptualLoss perceptual_{nullptr};
  std::unique_ptr<ParallelOptimizer> generator_, critic_;
  at::Tensor last_layer_;
  std::unique_ptr<data::DataLoader> loader_;
};

}  // namespace

TrainSummary train_tower(Run& run, const TrainOptions& options) {
  TrainSummary summary;
  TowerStage stage(run, options, summary);
  return run_loop(run, stage, std::move(summary), options);
}

}  // namespace vilau::train_detail
