#include "vilau/vision/losses.h"

#include <torch/torch.h>

#include "vilau/core/error.h"
#include "vilau/io/safetensors.h"

namespace vilau {

namespace F = torch::nn::functional;

void TowerLossConfig::validate(const std::string& path) const {
  config_check(contrastive == "siglip" || contrastive == "clip", path + ".contrastive",
               "siglip or clip", "\"" + contrastive + "\"");
  config_check(reconstruction == "l1" || reconstruction == "l2", path + ".reconstruction",
               "l1 or l2", "\"" + reconstruction + "\"");
  for (const auto& [key, value] :
       {std::pair<const char*, double>{"contrastive_weight", contrastive_weight},
        {"reconstruction_weight", reconstruction_weight},
        {"perceptual_weight", perceptual_weight},
        {"gan_weight", gan_weight},
        {"commitment_weight", commitment_weight}}) {
    config_check(value >= 0.0, path + "." + key, "a weight >= 0", std::to_string(value));
  }
}

at::Tensor combine_tower_losses(const TowerLossTerms& terms, const TowerLossConfig& config,
                                const at::Tensor& adaptive_weight, int64_t step) {
  at::Tensor total;
  auto add = [&total](const at::Tensor& term, const at::Tensor& weight) {
    if (term.defined()) {
      total = total.defined() ? total + weight * term : weight * term;
    }
  };
  const auto w = [](double v) { return torch::tensor(v); };
  add(terms.contrastive, w(config.contrastive_weight));
  add(terms.reconstruction, w(config.reconstruction_weight));
  add(terms.perceptual, w(config.perceptual_weight));
  add(terms.commitment, w(config.commitment_weight));
  if (step >= config.gan_start_step) {
    // adaptive_gan_weight already carries gan_weight.
    add(terms.generator, adaptive_weight.defined() ? adaptive_weight : w(config.gan_weight));
  }
  if (!total.defined()) {
    throw ConfigError(describe("tower loss", "no loss term", "at least one defined term"));
  }
  return total;
}

namespace {

at::Tensor normalized(const at::Tensor& x) { return x / x.norm(2, -1, true); }

}  // namespace

at::Tensor siglip_loss(const at::Tensor& image_embeds, const at::Tensor& text_embeds,
                       const at::Tensor& logit_scale, const at::Tensor& logit_bias) {
  const at::Tensor logits =
      torch::matmul(normalized(text_embeds), normalized(image_embeds).t()) * logit_scale.exp() +
      logit_bias;
  const at::Tensor labels = 2 * torch::eye(logits.size(0), logits.options()) - 1;
  return -F::logsigmoid(labels * logits).sum(-1).mean();
}

at::Tensor clip_loss(const at::Tensor& image_embeds, const at::Tensor& text_embeds,
                     const at::Tensor& logit_scale) {
  const at::Tensor logits =
      torch::matmul(normalized(text_embeds), normalized(image_embeds).t()) * logit_scale.exp();
  const at::Tensor targets = torch::arange(logits.size(0), logits.options().dtype(torch::kLong));
  return (F::cross_entropy(logits, targets) + F::cross_entropy(logits.t(), targets)) / 2;
}

at::Tensor reconstruction_loss(const at::Tensor& reconstruction, const at::Tensor& target,
                               const std::string& kind) {
  if (kind == "l1") {
    return F::l1_loss(reconstruction, target);
  }
  if (kind == "l2") {
    return F::mse_loss(reconstruction, target);
  }
  throw ConfigError(
      describe("reconstruction loss", "unknown kind", "l1 or l2", "\"" + kind + "\""));
}

// VGG16's feature stack split after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3. Children
// keep torchvision's indices, as the lpips package names them.
PerceptualLossImpl::PerceptualLossImpl() {
  auto scaling = register_module("scaling_layer", std::make_shared<torch::nn::Module>());
  shift_ =
      scaling->register_buffer("shift", torch::tensor({-.030f, -.088f, -.188f}).view({1, 3, 1, 1}));
  scale_ =
      scaling->register_buffer("scale", torch::tensor({.458f, .448f, .450f}).view({1, 3, 1, 1}));
  auto net = register_module("net", std::make_shared<torch::nn::Module>());
  const std::vector<std::vector<int64_t>> widths = {
      {64, 64}, {128, 128}, {256, 256, 256}, {512, 512, 512}, {512, 512, 512}};
  int64_t index = 0, in = 3;
  for (size_t s = 0; s < widths.size(); ++s) {
    torch::nn::Sequential slice;
    auto holder = net->register_module("slice" + std::to_string(s + 1),
                                       std::make_shared<torch::nn::Module>());
    if (s > 0) {
      slice->push_back(std::to_string(index++),
                       torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2).stride(2)));
    }
    for (int64_t out : widths[s]) {
      auto conv = torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1));
      holder->register_module(std::to_string(index), conv);
      slice->push_back(std::to_string(index++), conv);
      slice->push_back(std::to_string(index++), torch::nn::ReLU());
      in = out;
    }
    slices_.push_back(slice);
    torch::nn::Sequential lin(
        torch::nn::Dropout(0.5),
        torch::nn::Conv2d(torch::nn::Conv2dOptions(widths[s].back(), 1, 1).bias(false)));
    register_module("lin" + std::to_string(s), std::make_shared<torch::nn::Module>())
        ->register_module("model", lin);
    lins_.push_back(lin);
  }
  for (auto& p : parameters()) {
    p.requires_grad_(false);  // a fixed metric, never trained
  }
  eval();
}

at::Tensor PerceptualLossImpl::forward(const at::Tensor& input, const at::Tensor& target) {
  at::Tensor a = (input - shift_) / scale_, b = (target - shift_) / scale_;
  at::Tensor total;
  for (size_t s = 0; s < slices_.size(); ++s) {
    a = slices_[s]->forward(a);
    b = slices_[s]->forward(b);
    const auto unit = [](const at::Tensor& f) {
      return f / (f.pow(2).sum(1, true).sqrt() + 1e-10);
    };
    const at::Tensor d = lins_[s]->forward((unit(a) - unit(b)).pow(2)).mean({2, 3});
    total = total.defined() ? total + d : d;
  }
  return total.flatten();
}

void PerceptualLossImpl::load(const std::string& path) {
  const io::SafetensorsFile file = io::SafetensorsFile::open(path);
  torch::NoGradGuard no_grad;
  auto copy = [&](const std::string& name, at::Tensor target) {
    const io::TensorInfo* info = file.find(name);
    if (info == nullptr || info->shape != target.sizes().vec()) {
      throw ShapeError(describe(path, "LPIPS tensor '" + name + "'",
                                io::shape_text(target.sizes().vec()),
                                info ? io::shape_text(info->shape) : "no such tensor"));
    }
    target.copy_(file.tensor(name));
  };
  for (const auto& p : named_parameters()) {
    copy(p.key(), p.value());
  }
}

PatchDiscriminatorImpl::PatchDiscriminatorImpl(int64_t channels, int64_t width, int64_t layers) {
  using torch::nn::Conv2dOptions;
  torch::nn::Sequential seq;
  const auto leaky = [] {
    return torch::nn::LeakyReLU(torch::nn::LeakyReLUOptions().negative_slope(0.2));
  };
  seq->push_back(torch::nn::Conv2d(Conv2dOptions(channels, width, 4).stride(2).padding(1)));
  seq->push_back(leaky());
  int64_t mult = 1;
  for (int64_t n = 1; n <= layers; ++n) {
    const int64_t prev = mult;
    mult = std::min<int64_t>(int64_t{1} << n, 8);
    // The last of these keeps the resolution; batch norm makes conv biases redundant.
    seq->push_back(torch::nn::Conv2d(Conv2dOptions(width * prev, width * mult, 4)
                                         .stride(n == layers ? 1 : 2)
                                         .padding(1)
                                         .bias(false)));
    seq->push_back(torch::nn::BatchNorm2d(width * mult));
    seq->push_back(leaky());
  }
  seq->push_back(torch::nn::Conv2d(Conv2dOptions(width * mult, 1, 4).stride(1).padding(1)));
  main_ = register_module("main", seq);
  // taming-transformers' weights_init: convolution weights N(0, 0.02), batch-norm scales
  // N(1, 0.02) and shifts 0; convolution biases keep their default initialisation.
  torch::NoGradGuard no_grad;
  for (const auto& module : main_->children()) {
    if (auto* conv = module->as<torch::nn::Conv2d>()) {
      conv->weight.normal_(0.0, 0.02);
    } else if (auto* norm = module->as<torch::nn::BatchNorm2d>()) {
      norm->weight.normal_(1.0, 0.02);
      norm->bias.zero_();
    }
  }
}

at::Tensor PatchDiscriminatorImpl::forward(const at::Tensor& x) { return main_->forward(x); }

at::Tensor hinge_discriminator_loss(const at::Tensor& logits_real, const at::Tensor& logits_fake) {
  return (torch::relu(1.0 - logits_real).mean() + torch::relu(1.0 + logits_fake).mean()) * 0.5;
}

at::Tensor generator_loss(const at::Tensor& logits_fake) { return -logits_fake.mean(); }

at::Tensor adaptive_gan_weight(const at::Tensor& nll_loss, const at::Tensor& g_loss,
                               const at::Tensor& last_layer, double gan_weight) {
  const at::Tensor nll_grad =
      torch::autograd::grad({nll_loss}, {last_layer}, {}, /*retain_graph=*/true)[0];
  const at::Tensor g_grad =
      torch::autograd::grad({g_loss}, {last_layer}, {}, /*retain_graph=*/true)[0];
  return (nll_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0.0, 1e4).detach() * gan_weight;
}

}  // namespace vilau
