#pragma once
// The RQ-VAE / taming-transformers conv decoder that turns summed code vectors back into
// pixels (SPEC §2.4). Parameters carry the official names relative to "rqvaesiglip.":
// post_quant_conv.*, decoder.conv_in.*, decoder.mid.{block_1,attn_1,block_2}.*,
// decoder.up.{level}.{block,attn}.{i}.*, decoder.up.{level}.upsample.conv.*,
// decoder.norm_out.*, decoder.conv_out.*.
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include "vilau/vision/config.h"

namespace vilau {

class ResnetBlockImpl : public torch::nn::Module {
 public:
  ResnetBlockImpl(int64_t in_channels, int64_t out_channels, double dropout);
  at::Tensor forward(const at::Tensor& x);

 private:
  torch::nn::GroupNorm norm1_{nullptr}, norm2_{nullptr};
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, nin_shortcut_{nullptr};
  double dropout_;
};
TORCH_MODULE(ResnetBlock);

// Single-head self-attention over all H*W positions.
class AttnBlockImpl : public torch::nn::Module {
 public:
  explicit AttnBlockImpl(int64_t channels);
  at::Tensor forward(const at::Tensor& x);

 private:
  torch::nn::GroupNorm norm_{nullptr};
  torch::nn::Conv2d q_{nullptr}, k_{nullptr}, v_{nullptr}, proj_out_{nullptr};
};
TORCH_MODULE(AttnBlock);

class PixelDecoderImpl : public torch::nn::Module {
 public:
  // `embed_dim` is the code-vector width C (the SigLIP width).
  PixelDecoderImpl(const PixelDecoderConfig& config, int64_t embed_dim);

  // z_q [B, H, W, C] -> images [B, out_ch, S, S], roughly in [-1, 1]. With a configured
  // latent_shape the grid is first resized bilinearly in fp32 (27x27 -> 24x24 at 384 px).
  at::Tensor forward(const at::Tensor& z_q);

 private:
  PixelDecoderConfig config_;
  torch::nn::Conv2d post_quant_conv_{nullptr}, conv_in_{nullptr}, conv_out_{nullptr};
  ResnetBlock mid_block_1_{nullptr}, mid_block_2_{nullptr};
  AttnBlock mid_attn_1_{nullptr};
  std::vector<torch::nn::ModuleList> blocks_, attns_;  // by level
  std::vector<torch::nn::Conv2d> upsamples_;           // by level; null at level 0
  torch::nn::GroupNorm norm_out_{nullptr};
};
TORCH_MODULE(PixelDecoder);

}  // namespace vilau
