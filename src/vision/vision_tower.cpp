#include "vilau/vision/vision_tower.h"

#include <torch/torch.h>

namespace vilau {

VisionTowerImpl::VisionTowerImpl(const VisionTowerConfig& config) : config_(config) {
  config.validate("vision_tower");
  // Children are registered under the official names below "rqvaesiglip."; the pixel
  // decoder's own children (post_quant_conv, decoder) sit at that level too.
  auto siglip = register_module("siglip_model", std::make_shared<torch::nn::Module>());
  vision = siglip->register_module("vision_model", SiglipVisionTransformer(config.vision));
  text = siglip->register_module("text_model", SiglipTextTransformer(config.text));
  // SigLIP's initial values: a temperature of 10 and a bias of -10.
  logit_scale = siglip->register_parameter("logit_scale", torch::full({1}, std::log(10.0)));
  logit_bias = siglip->register_parameter("logit_bias", torch::full({1}, -10.0));
  quantizer =
      register_module("quantizer", ResidualQuantizer(config.quantizer, config.vision.hidden_size));
  decoder =
      register_module("pixel_decoder", PixelDecoder(config.decoder, config.vision.hidden_size));
}

VisionTowerImpl::Encoded VisionTowerImpl::encode(const at::Tensor& pixels) {
  auto out = quantizer->forward(vision->grid(pixels));
  return {out.codes, out.z_q, out.commitment_loss};
}

at::Tensor VisionTowerImpl::decode(const at::Tensor& z_q) { return decoder->forward(z_q); }

at::Tensor VisionTowerImpl::decode_codes(const at::Tensor& codes) {
  return decoder->forward(quantizer->embed_codes(codes).sum);
}

void VisionTowerImpl::load(const TensorLookup& lookup) {
  // The official code may save SigLIP's logit scalars under a short alias.
  const TensorLookup with_alias = [&lookup](const std::string& name) {
    at::Tensor t = lookup(name);
    const std::string full = "rqvaesiglip.siglip_model.";
    if (!t.defined() && name.rfind(full + "logit_", 0) == 0) {
      t = lookup("rqvaesiglip." + name.substr(full.size()));
    }
    return t;
  };
  load_module(*named_children()["siglip_model"], with_alias, "rqvaesiglip.siglip_model.");
  load_module(*quantizer, lookup, "rqvaesiglip.quantizer.");
  load_module(*decoder, lookup, "rqvaesiglip.");
}

std::map<std::string, at::Tensor> VisionTowerImpl::official_state_dict() {
  std::map<std::string, at::Tensor> out;
  const std::string decoder_prefix = "pixel_decoder.";
  auto add = [&out, &decoder_prefix](std::string name, const at::Tensor& t) {
    if (name.rfind(decoder_prefix, 0) == 0) {
      name.erase(0, decoder_prefix.size());  // the decoder's children sit at rqvaesiglip. level
    }
    out["rqvaesiglip." + name] = t;
  };
  for (const auto& p : named_parameters()) {
    add(p.key(), p.value());
  }
  for (const auto& b : named_buffers()) {
    add(b.key(), b.value());
  }
  return out;
}

}  // namespace vilau
