#include "vilau/vision/pixel_decoder.h"

#include <torch/torch.h>

#include <algorithm>

#include "vilau/core/error.h"

namespace vilau {

namespace F = torch::nn::functional;

namespace {

torch::nn::GroupNorm group_norm(int64_t channels) {
  return torch::nn::GroupNorm(torch::nn::GroupNormOptions(32, channels).eps(1e-6).affine(true));
}

torch::nn::Conv2d conv(int64_t in, int64_t out, int64_t kernel) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel).padding(kernel / 2));
}

// A parameterless container, so that names nest as in the official module tree.
std::shared_ptr<torch::nn::Module> node() { return std::make_shared<torch::nn::Module>(); }

}  // namespace

ResnetBlockImpl::ResnetBlockImpl(int64_t in_channels, int64_t out_channels, double dropout)
    : norm1_(register_module("norm1", group_norm(in_channels))),
      norm2_(register_module("norm2", group_norm(out_channels))),
      conv1_(register_module("conv1", conv(in_channels, out_channels, 3))),
      conv2_(register_module("conv2", conv(out_channels, out_channels, 3))),
      dropout_(dropout) {
  if (in_channels != out_channels) {
    nin_shortcut_ = register_module("nin_shortcut", conv(in_channels, out_channels, 1));
  }
}

at::Tensor ResnetBlockImpl::forward(const at::Tensor& x) {
  at::Tensor h = conv1_(torch::silu(norm1_(x)));
  h = F::dropout(torch::silu(norm2_(h)),
                 F::DropoutFuncOptions().p(dropout_).training(is_training()));
  h = conv2_(h);
  return (nin_shortcut_ ? nin_shortcut_(x) : x) + h;
}

AttnBlockImpl::AttnBlockImpl(int64_t channels)
    : norm_(register_module("norm", group_norm(channels))),
      q_(register_module("q", conv(channels, channels, 1))),
      k_(register_module("k", conv(channels, channels, 1))),
      v_(register_module("v", conv(channels, channels, 1))),
      proj_out_(register_module("proj_out", conv(channels, channels, 1))) {}

at::Tensor AttnBlockImpl::forward(const at::Tensor& x) {
  const at::Tensor h = norm_(x);
  const int64_t b = x.size(0), c = x.size(1), hw = x.size(2) * x.size(3);
  // [B, HW, C] queries, keys and values: one head of width C, scaled by C^-1/2.
  const at::Tensor q = q_(h).reshape({b, c, hw}).transpose(1, 2);
  const at::Tensor k = k_(h).reshape({b, c, hw}).transpose(1, 2);
  const at::Tensor v = v_(h).reshape({b, c, hw}).transpose(1, 2);
  const at::Tensor out =
      at::scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)).squeeze(1);
  return x + proj_out_(out.transpose(1, 2).reshape(x.sizes()));
}

PixelDecoderImpl::PixelDecoderImpl(const PixelDecoderConfig& config, int64_t embed_dim)
    : config_(config) {
  config.validate("decoder");
  const auto levels = static_cast<int64_t>(config.ch_mult.size());
  post_quant_conv_ = register_module("post_quant_conv", conv(embed_dim, config.z_channels, 1));

  auto decoder = register_module("decoder", node());
  int64_t block_in = config.ch * config.ch_mult.back();
  int64_t resolution = config.resolution >> (levels - 1);
  conv_in_ = decoder->register_module("conv_in", conv(config.z_channels, block_in, 3));
  auto mid = decoder->register_module("mid", node());
  mid_block_1_ = mid->register_module("block_1", ResnetBlock(block_in, block_in, config.dropout));
  mid_attn_1_ = mid->register_module("attn_1", AttnBlock(block_in));
  mid_block_2_ = mid->register_module("block_2", ResnetBlock(block_in, block_in, config.dropout));

  // The official ModuleList is indexed by level and run from the top level down.
  std::vector<std::shared_ptr<torch::nn::Module>> up(levels);
  blocks_.resize(levels);
  attns_.resize(levels);
  upsamples_.resize(levels, torch::nn::Conv2d(nullptr));
  for (int64_t level = levels - 1; level >= 0; --level) {
    up[level] = node();
    blocks_[level] = up[level]->register_module("block", torch::nn::ModuleList());
    attns_[level] = up[level]->register_module("attn", torch::nn::ModuleList());
    const int64_t block_out = config.ch * config.ch_mult[level];
    const bool attention = std::find(config.attn_resolutions.begin(), config.attn_resolutions.end(),
                                     resolution) != config.attn_resolutions.end();
    for (int64_t i = 0; i <= config.num_res_blocks; ++i) {
      blocks_[level]->push_back(ResnetBlock(block_in, block_out, config.dropout));
      block_in = block_out;
      if (attention) {
        attns_[level]->push_back(AttnBlock(block_in));
      }
    }
    if (level != 0) {
      upsamples_[level] = up[level]
                              ->register_module("upsample", node())
                              ->register_module("conv", conv(block_in, block_in, 3));
      resolution *= 2;
    }
  }
  auto up_list = decoder->register_module("up", torch::nn::ModuleList());
  for (const auto& level : up) {
    up_list->push_back(level);
  }
  norm_out_ = decoder->register_module("norm_out", group_norm(block_in));
  conv_out_ = decoder->register_module("conv_out", conv(block_in, config.out_ch, 3));
}

at::Tensor PixelDecoderImpl::forward(const at::Tensor& z_q) {
  if (z_q.dim() != 4 || z_q.size(3) != post_quant_conv_->options.in_channels()) {
    throw ShapeError(
        describe("PixelDecoder", "input z_q",
                 "[B, H, W, " + std::to_string(post_quant_conv_->options.in_channels()) + "]",
                 c10::str(z_q.sizes())));
  }
  at::Tensor h = z_q.permute({0, 3, 1, 2});
  if (!config_.latent_shape.empty()) {
    // In fp32 whatever the model dtype, as the official decode does.
    h = F::interpolate(h.to(torch::kFloat), F::InterpolateFuncOptions()
                                                .size(config_.latent_shape)
                                                .mode(torch::kBilinear)
                                                .align_corners(false))
            .to(z_q.scalar_type());
  }
  h = conv_in_(post_quant_conv_(h.contiguous()));
  h = mid_block_2_(mid_attn_1_(mid_block_1_(h)));
  for (auto level = static_cast<int64_t>(blocks_.size()) - 1; level >= 0; --level) {
    for (size_t i = 0; i < blocks_[level]->size(); ++i) {
      h = blocks_[level][i]->as<ResnetBlock>()->forward(h);
      if (!attns_[level]->is_empty()) {
        h = attns_[level][i]->as<AttnBlock>()->forward(h);
      }
    }
    if (upsamples_[level]) {
      // Nearest-neighbour doubling in fp32, then back to the working dtype.
      h = upsamples_[level](
          F::interpolate(h.to(torch::kFloat), F::InterpolateFuncOptions()
                                                  .scale_factor(std::vector<double>{2.0, 2.0})
                                                  .mode(torch::kNearest))
              .to(z_q.scalar_type()));
    }
  }
  return conv_out_(torch::silu(norm_out_(h)));
}

}  // namespace vilau
