#pragma once
// Losses of vision-tower training (SPEC §2.5, §2.6): contrastive against the frozen text
// tower, pixel reconstruction, LPIPS-style perceptual, PatchGAN hinge, and the
// quantizer's commitment term. The official recipe is unreleased; the defaults follow the
// paper (contrastive 1, reconstruction 1) and RQ-VAE (commitment 0.25, LPIPS 1, GAN 0.75).
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>

#include "vilau/core/config.h"

namespace vilau {

struct TowerLossConfig {
  std::string contrastive = "siglip";  // siglip (sigmoid) or clip (softmax)
  double contrastive_weight = 1.0;
  std::string reconstruction = "l2";  // l1 or l2
  double reconstruction_weight = 1.0;
  double perceptual_weight = 1.0;
  std::string perceptual_weights;  // safetensors with VGG16 + LPIPS heads; empty: no LPIPS
  double gan_weight = 0.75;
  int64_t gan_start_step = 0;
  double commitment_weight = 0.25;

  template <class V>
  void visit(V& v) {
    v.field("contrastive", contrastive);
    v.field("contrastive_weight", contrastive_weight);
    v.field("reconstruction", reconstruction);
    v.field("reconstruction_weight", reconstruction_weight);
    v.field("perceptual_weight", perceptual_weight);
    v.field("perceptual_weights", perceptual_weights);
    v.field("gan_weight", gan_weight);
    v.field("gan_start_step", gan_start_step);
    v.field("commitment_weight", commitment_weight);
  }
  void validate(const std::string& path) const;
};

// The terms of one tower training step, each unweighted; undefined terms are left out.
struct TowerLossTerms {
  at::Tensor contrastive, reconstruction, perceptual, generator, commitment;
};
// sum of weight x term; the generator term is scaled by the adaptive weight too and only
// counts from gan_start_step on.
at::Tensor combine_tower_losses(const TowerLossTerms& terms, const TowerLossConfig& config,
                                const at::Tensor& adaptive_weight, int64_t step);

// SigLIP's pairwise sigmoid loss (HF SiglipModel): embeddings are L2-normalised, logits
// = text . image * exp(logit_scale) + logit_bias, +1 on the diagonal and -1 elsewhere;
// the mean over texts of the summed -log sigmoid.
at::Tensor siglip_loss(const at::Tensor& image_embeds, const at::Tensor& text_embeds,
                       const at::Tensor& logit_scale, const at::Tensor& logit_bias);
// CLIP's symmetric softmax cross-entropy over the same logits without bias.
at::Tensor clip_loss(const at::Tensor& image_embeds, const at::Tensor& text_embeds,
                     const at::Tensor& logit_scale);

at::Tensor reconstruction_loss(const at::Tensor& reconstruction, const at::Tensor& target,
                               const std::string& kind);

// LPIPS on VGG16: five feature stages, each unit-normalised over channels, squared
// differences weighted by a 1x1 "lin" layer, averaged over space, summed over stages.
// Parameter names follow the lpips package: net.slice{1..5}.{i}.{weight,bias} and
// lin{0..4}.model.1.weight, so converted public weights load by name.
class PerceptualLossImpl : public torch::nn::Module {
 public:
  PerceptualLossImpl();
  // Inputs in [-1, 1], [B, 3, H, W]; returns [B].
  at::Tensor forward(const at::Tensor& input, const at::Tensor& target);
  // Loads every parameter from `path`; ShapeError/IoError name the tensor or file.
  void load(const std::string& path);

 private:
  std::vector<torch::nn::Sequential> slices_;
  std::vector<torch::nn::Sequential> lins_;
  at::Tensor shift_, scale_;  // lpips' input normalisation, buffers of "scaling_layer"
};
TORCH_MODULE(PerceptualLoss);

// The taming-transformers PatchGAN (NLayerDiscriminator): 70x70 receptive field with 3
// layers, batch norm, LeakyReLU(0.2). Returns per-patch logits.
class PatchDiscriminatorImpl : public torch::nn::Module {
 public:
  explicit PatchDiscriminatorImpl(int64_t channels = 3, int64_t width = 64, int64_t layers = 3);
  at::Tensor forward(const at::Tensor& x);

 private:
  torch::nn::Sequential main_{nullptr};
};
TORCH_MODULE(PatchDiscriminator);

// Hinge loss of the discriminator: (mean relu(1 - real) + mean relu(1 + fake)) / 2.
at::Tensor hinge_discriminator_loss(const at::Tensor& logits_real, const at::Tensor& logits_fake);
// The generator's adversarial loss: -mean(fake logits).
at::Tensor generator_loss(const at::Tensor& logits_fake);
// VQGAN's adaptive weight: |grad nll| / (|grad g| + 1e-4) at `last_layer`, clamped to
// [0, 1e4], times `gan_weight`; no gradient flows through it.
at::Tensor adaptive_gan_weight(const at::Tensor& nll_loss, const at::Tensor& g_loss,
                               const at::Tensor& last_layer, double gan_weight);

}  // namespace vilau
