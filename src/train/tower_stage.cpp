// The tower stage the official repo never released (SPEC §2.6): SigLIP's contrastive loss
// against the text tower keeps the features aligned with text, while reconstruction,
// commitment, perceptual and (from a start step) adversarial losses teach the quantizer
// and pixel decoder to rebuild the image from the codes. Codebooks follow their EMA.
#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>

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

}  // namespace

TrainSummary train_tower(Run& run, const TrainOptions& options) {
  const TrainConfig& tc = run.train;
  const ModelConfig config = model_config(run);
  torch::manual_seed(static_cast<uint64_t>(tc.seed));
  VisionTower tower(config.vision_tower);
  if (!tc.init.empty()) {
    const OfficialCheckpoint checkpoint = OfficialCheckpoint::open(tc.init);
    tower->load([&checkpoint](const std::string& name) {
      return checkpoint.tensor("vision_tower." + name);
    });
  }
  tower->to(run.device, run.dtype);
  PatchDiscriminator discriminator;
  discriminator->to(run.device, run.dtype);
  PerceptualLoss perceptual{nullptr};
  if (!tc.tower_losses.perceptual_weights.empty()) {
    perceptual = PerceptualLoss();
    perceptual->load(tc.tower_losses.perceptual_weights);
    perceptual->to(run.device, run.dtype);
    perceptual->eval();
    for (at::Tensor& p : perceptual->parameters()) p.requires_grad_(false);
  }
  if (run.group.distributed()) {
    const ProcessGroup& group = run.group;
    ResidualQuantizerImpl::RankSync sync;
    sync.all_reduce_sum = [&group](at::Tensor& t) { group.all_reduce_sum(t); };
    sync.broadcast_from_first = [&group](at::Tensor& t) { group.broadcast(t, 0); };
    sync.first = group.rank() == 0;
    tower->quantizer->set_rank_sync(std::move(sync));
  }
  const data::DataConfig& dc = *run.config.data;
  config_check(dc.image_size == config.vision_tower.vision.image_size, "data.image_size",
               std::to_string(config.vision_tower.vision.image_size) + ", the tower's",
               std::to_string(dc.image_size));
  const Tokenizer tokenizer = Tokenizer::load(run.tokenizer_dir());

  ParallelOptimizer generator(prefixed(*tower, "vision_tower.", true), tc.optimizer, tc.distributed,
                              run.group, run.device);
  OptimizerConfig disc_config = tc.optimizer;
  disc_config.lr = tc.discriminator_lr;
  ParallelOptimizer critic(prefixed(*discriminator, "discriminator.", false), disc_config,
                           tc.distributed, run.group, run.device);
  generator.inject_faults(options.faults);
  const at::Tensor last_layer = tower->decoder->named_parameters()["decoder.conv_out.weight"];

  TrainSummary summary;
  data::DataPosition position;
  if (auto state = run.resume(&summary.resumed_from)) {
    const TensorMap weights = as_map(state->model);
    const TensorLookup lookup = [&weights](const std::string& name) {
      const auto it = weights.find(name);
      return it == weights.end() ? at::Tensor() : it->second;
    };
    tower->load([&lookup](const std::string& name) { return lookup("vision_tower." + name); });
    load_module(*discriminator, lookup, "discriminator.");
    generator.load_shard(summary.resumed_from, "generator");
    critic.load_shard(summary.resumed_from, "discriminator");
    run.restore_rng(*state);
    position = run.position_of(*state);
    summary.first_step = state->step;
  }
  data::DataLoader loader(dc, tokenizer, run.group.rank(), run.group.world_size(), position);
  tower->train();
  discriminator->train();

  ProgressBar bar("train tower", tc.max_steps, "step", summary.first_step,
                  options.progress && run.is_main());
  const auto started = std::chrono::steady_clock::now();
  int64_t step = summary.first_step, samples_done = 0;
  const TowerLossConfig& lc = tc.tower_losses;
  while (step < tc.max_steps) {
    const bool gan = lc.gan_weight > 0 && step >= lc.gan_start_step;
    std::map<std::string, double> parts;
    double loss_sum = 0, disc_sum = 0;
    data::DataPosition after;
    std::vector<at::Tensor> fakes, reals;
    for (int64_t micro = 0; micro < tc.grad_accum; ++micro) {
      data::DataBatch batch = Run::next_batch(loader);
      after = batch.position;
      const at::Tensor pixels = batch.batch.images.to(run.device, run.dtype);
      const auto quantized = tower->quantizer->forward(tower->vision->grid(pixels));
      const at::Tensor reconstruction = tower->decoder->forward(quantized.z_q);
      TowerLossTerms terms;
      const at::Tensor image_embeds = tower->vision->forward(pixels).pooled;
      const at::Tensor text_embeds =
          tower->text
              ->forward(siglip_text_ids(tokenizer, batch.captions, config.vision_tower.text)
                            .to(run.device))
              .pooled;
      terms.contrastive =
          lc.contrastive == "clip"
              ? clip_loss(image_embeds, text_embeds, tower->logit_scale)
              : siglip_loss(image_embeds, text_embeds, tower->logit_scale, tower->logit_bias);
      terms.reconstruction = reconstruction_loss(reconstruction, pixels, lc.reconstruction);
      terms.commitment = quantized.commitment_loss;
      if (perceptual) terms.perceptual = perceptual->forward(reconstruction, pixels).mean();
      at::Tensor adaptive;
      if (gan) {
        terms.generator = generator_loss(discriminator->forward(reconstruction));
        at::Tensor nll = terms.reconstruction * lc.reconstruction_weight;
        if (terms.perceptual.defined()) nll = nll + terms.perceptual * lc.perceptual_weight;
        adaptive = adaptive_gan_weight(nll, terms.generator, last_layer, lc.gan_weight);
      }
      const at::Tensor loss = combine_tower_losses(terms, lc, adaptive, step);
      generator.backward(loss / static_cast<double>(tc.grad_accum), micro == tc.grad_accum - 1);
      loss_sum += loss.item<double>();
      for (const auto& [name, t] :
           std::map<std::string, at::Tensor>{{"contrastive", terms.contrastive},
                                             {"reconstruction", terms.reconstruction},
                                             {"commitment", terms.commitment},
                                             {"perceptual", terms.perceptual},
                                             {"generator", terms.generator}}) {
        if (t.defined()) parts[name] += t.item<double>() / static_cast<double>(tc.grad_accum);
      }
      fakes.push_back(reconstruction.detach());
      reals.push_back(pixels);
      samples_done += pixels.size(0) * run.group.world_size();
    }
    // The generator's backward reached the discriminator; its update uses only its own loss.
    for (at::Tensor& p : discriminator->parameters()) p.mutable_grad() = at::Tensor();
    const double factor =
        cosine_lr_factor(step, tc.max_steps, tc.optimizer.warmup_ratio, tc.optimizer.min_lr_ratio);
    const auto result = generator.step(factor, std::isfinite(loss_sum));
    bool critic_finite = true;
    if (gan) {
      for (size_t i = 0; i < fakes.size(); ++i) {
        const at::Tensor d_loss = hinge_discriminator_loss(discriminator->forward(reals[i]),
                                                           discriminator->forward(fakes[i]));
        critic.backward(d_loss / static_cast<double>(fakes.size()), i + 1 == fakes.size());
        disc_sum += d_loss.item<double>() / static_cast<double>(fakes.size());
      }
      critic_finite = std::isfinite(disc_sum);
    }
    // Whether the critic trains depends on the step alone, so every rank agrees.
    if (gan) critic.step(factor, critic_finite);
    ++step;
    if (options.after_step) options.after_step(step, generator);
    const double loss = mean_over_ranks(run.group, loss_sum / static_cast<double>(tc.grad_accum));
    summary.losses.push_back(loss);
    if (result.skipped) run.count_skipped(summary, step, result.grad_norm);
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    if (step % tc.log_every == 0 || step == tc.max_steps) {
      nlohmann::json record = {{"step", step},
                               {"loss", loss},
                               {"lr", tc.optimizer.lr * factor},
                               {"grad_norm", result.grad_norm},
                               {"skipped", result.skipped},
                               {"samples_per_s", static_cast<double>(samples_done) / elapsed},
                               {"elapsed_s", elapsed}};
      for (const auto& [name, value] : parts) {
        record[name + "_loss"] = mean_over_ranks(run.group, value);
      }
      if (gan) record["discriminator_loss"] = mean_over_ranks(run.group, disc_sum);
      run.log(record);
      char status[96];
      std::snprintf(status, sizeof status, "loss %.4f %.2f img/s", loss,
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
      TensorMap weights;
      for (auto& [name, t] : tower->official_state_dict()) weights["vision_tower." + name] = t;
      add_module_tensors(weights, "discriminator.", *discriminator);
      state.model = as_named(weights);
      state.scheduler = {{"type", "cosine"}, {"step", step}, {"total_steps", tc.max_steps}};
      run.save(std::move(state), after, [&](const std::string& folder) {
        generator.save_shard(folder, "generator");
        critic.save_shard(folder, "discriminator");
      });
    }
  }
  bar.finish();
  summary.last_step = step;
  if (tc.export_at_end && run.is_main()) {
    // A whole model folder, so that the next stage starts from it: the trained tower, and
    // the rest from train.init or freshly initialised.
    std::map<std::string, at::Tensor> weights;
    if (!tc.init.empty()) {
      weights = OfficialCheckpoint::open(tc.init).load_all();
    } else {
      weights = init_weights(config, static_cast<uint64_t>(tc.seed));
    }
    for (auto& [name, t] : tower->official_state_dict()) {
      weights["vision_tower." + name] = t.detach().cpu().to(at::kBFloat16);
    }
    summary.export_dir = run.export_model(config, weights);
  }
  run.group.barrier();
  return summary;
}

}  // namespace vilau::train_detail
