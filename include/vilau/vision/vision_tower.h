#pragma once
// VILA-U's unified vision tower, the official "rqvaesiglip" (SPEC §2): SigLIP vision and
// text towers with their logit scalars, the residual quantizer fed by the second-to-last
// SigLIP layer, and the pixel decoder.
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <map>
#include <string>

#include "vilau/model/load_module.h"
#include "vilau/vision/config.h"
#include "vilau/vision/pixel_decoder.h"
#include "vilau/vision/residual_quantizer.h"
#include "vilau/vision/siglip.h"

namespace vilau {

class VisionTowerImpl : public torch::nn::Module {
 public:
  explicit VisionTowerImpl(const VisionTowerConfig& config);

  struct Encoded {
    at::Tensor codes;            // [B, H, W, D] int64
    at::Tensor z_q;              // [B, H, W, C], straight-through
    at::Tensor commitment_loss;  // scalar
  };
  // Pixels [B, 3, S, S] in [-1, 1] -> codes and quantized features.
  Encoded encode(const at::Tensor& pixels);
  // Summed code vectors [B, H, W, C] -> pixels [B, 3, S, S].
  at::Tensor decode(const at::Tensor& z_q);
  // Codes [B, H, W, D] -> pixels, as generation does.
  at::Tensor decode_codes(const at::Tensor& codes);

  // Every tensor from an official vision_tower/ checkpoint, `lookup` taking names such as
  // "rqvaesiglip.quantizer.codebooks.0.weight". ShapeError names what is missing.
  void load(const TensorLookup& lookup);
  // Every parameter and buffer under its official name below vision_tower/, the inverse
  // of load().
  std::map<std::string, at::Tensor> official_state_dict();

  const VisionTowerConfig& config() const { return config_; }
  SiglipVisionTransformer vision{nullptr};
  SiglipTextTransformer text{nullptr};
  ResidualQuantizer quantizer{nullptr};
  PixelDecoder decoder{nullptr};
  at::Tensor logit_scale, logit_bias;

 private:
  VisionTowerConfig config_;
};
TORCH_MODULE(VisionTower);

}  // namespace vilau
