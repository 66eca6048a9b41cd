#include "vilau/vision/config.h"

namespace vilau {

namespace {

void check_heads(const std::string& path, int64_t hidden, int64_t heads) {
  config_check(heads > 0 && hidden > 0 && hidden % heads == 0, path + ".num_heads",
               "a positive divisor of hidden_size " + std::to_string(hidden),
               std::to_string(heads));
}

}  // namespace

void SiglipVisionConfig::validate(const std::string& path) const {
  // The patch conv has no padding: 384 px with 14 px patches gives a 27x27 grid.
  config_check(patch_size > 0 && patch_size <= image_size, path + ".patch_size",
               "a positive size no larger than image_size " + std::to_string(image_size),
               std::to_string(patch_size));
  check_heads(path, hidden_size, num_heads);
  config_check(intermediate_size > 0, path + ".intermediate_size", "a positive size",
               std::to_string(intermediate_size));
  config_check(num_layers >= 2, path + ".num_layers", "at least 2 (the quantizer reads layer -2)",
               std::to_string(num_layers));
  config_check(select_layer < 0 && -select_layer <= num_layers, path + ".select_layer",
               "a negative layer index within -" + std::to_string(num_layers) + "..-1",
               std::to_string(select_layer));
}

void SiglipTextConfig::validate(const std::string& path) const {
  config_check(vocab_size > 0, path + ".vocab_size", "a positive size", std::to_string(vocab_size));
  config_check(max_positions > 0, path + ".max_positions", "a positive length",
               std::to_string(max_positions));
  check_heads(path, hidden_size, num_heads);
  config_check(num_layers > 0, path + ".num_layers", "a positive count",
               std::to_string(num_layers));
}

void QuantizerConfig::validate(const std::string& path) const {
  config_check(codebook_size > 0, path + ".codebook_size", "a positive size",
               std::to_string(codebook_size));
  config_check(depth > 0, path + ".depth", "a positive number of codes per position",
               std::to_string(depth));
  config_check(decay > 0.0 && decay < 1.0, path + ".decay", "a value in (0, 1)",
               std::to_string(decay));
}

void PixelDecoderConfig::validate(const std::string& path) const {
  config_check(ch > 0, path + ".ch", "a positive channel count", std::to_string(ch));
  config_check(!ch_mult.empty(), path + ".ch_mult", "at least one level", "an empty list");
  // The decoder normalises with GroupNorm(32 groups) at every width.
  for (size_t i = 0; i < ch_mult.size(); ++i) {
    config_check(ch_mult[i] > 0 && ch * ch_mult[i] % 32 == 0,
                 path + ".ch_mult[" + std::to_string(i) + "]",
                 "ch * ch_mult a positive multiple of 32 (GroupNorm groups)",
                 std::to_string(ch * ch_mult[i]));
  }
  config_check(latent_shape.empty() || latent_shape.size() == 2, path + ".latent_shape",
               "empty or [height, width]", std::to_string(latent_shape.size()) + " values");
}

void VisionTowerConfig::validate(const std::string& path) const {
  vision.validate(path + ".vision");
  text.validate(path + ".text");
  quantizer.validate(path + ".quantizer");
  decoder.validate(path + ".decoder");
  // Each decoder level but the first doubles the latent grid; it must land on the image size.
  const int64_t latent = decoder.latent_shape.empty() ? vision.grid() : decoder.latent_shape[0];
  const int64_t decoded = latent << (decoder.ch_mult.size() - 1);
  config_check(decoded == decoder.resolution, path + ".decoder.resolution",
               std::to_string(latent) + " x 2^" + std::to_string(decoder.ch_mult.size() - 1) +
                   " = " + std::to_string(decoded),
               std::to_string(decoder.resolution));
  config_check(decoder.resolution == vision.image_size, path + ".decoder.resolution",
               "vision.image_size " + std::to_string(vision.image_size),
               std::to_string(decoder.resolution));
}

}  // namespace vilau
