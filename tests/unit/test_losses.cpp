// Tower losses against tests/reference/make_loss_fixtures.py (PyTorch).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>

#include "test_util.h"
#include "vilau/core/error.h"
#include "vilau/io/safetensors.h"
#include "vilau/vision/losses.h"

namespace vilau {
namespace {

const std::string kFixture = VILAU_TEST_DATA_DIR "/losses/losses.safetensors";

const io::SafetensorsFile& fixture() {
  static const io::SafetensorsFile f = io::SafetensorsFile::open(kFixture);
  return f;
}

// The reference's weights: tensor k of the sorted names is randn(shape) * 0.05 after
// manual_seed(1000 + k); LibTorch's CPU generator gives the same numbers as PyTorch's.
void fill_seeded(std::map<std::string, at::Tensor> named,
                 const std::function<at::Tensor(const std::string&, at::Tensor)>& adjust) {
  std::vector<std::string> names;
  for (const auto& [name, t] : named) names.push_back(name);
  std::sort(names.begin(), names.end());
  torch::NoGradGuard no_grad;
  for (size_t k = 0; k < names.size(); ++k) {
    torch::manual_seed(1000 + k);
    at::Tensor& target = named.at(names[k]);
    target.copy_(adjust(names[k], torch::randn(target.sizes()) * 0.05));
  }
}

using vilau::testing::relative_error;

TEST(Losses, ContrastiveMatchReference) {
  const auto& f = fixture();
  const at::Tensor img = f.tensor("input.image_embeds"), txt = f.tensor("input.text_embeds");
  EXPECT_LE(relative_error(
                siglip_loss(img, txt, f.tensor("input.logit_scale"), f.tensor("input.logit_bias"))
                    .reshape(1),
                f.tensor("siglip.loss")),
            1e-6);
  EXPECT_LE(relative_error(clip_loss(img, txt, f.tensor("input.logit_scale")).reshape(1),
                           f.tensor("clip.loss")),
            1e-6);
  // Orthogonal embeddings: aligned pairs cost far less than shifted ones.
  const at::Tensor scale = torch::tensor({2.0f}), bias = torch::tensor({-1.0f});
  const at::Tensor e = torch::eye(4), shifted = torch::roll(e, 1, 0);
  EXPECT_LT(siglip_loss(e, e, scale, bias).item<float>(),
            siglip_loss(e, shifted, scale, bias).item<float>());
  EXPECT_LT(clip_loss(e, e, scale).item<float>(), clip_loss(e, shifted, scale).item<float>());
}

TEST(Losses, ReconstructionKinds) {
  const at::Tensor a = torch::tensor({1.0f, 2.0f}), b = torch::tensor({0.0f, 4.0f});
  EXPECT_FLOAT_EQ(reconstruction_loss(a, b, "l1").item<float>(), 1.5f);
  EXPECT_FLOAT_EQ(reconstruction_loss(a, b, "l2").item<float>(), 2.5f);
  EXPECT_THROW(reconstruction_loss(a, b, "huber"), ConfigError);
}

TEST(Losses, PerceptualMatchesReferenceAndLoadsByName) {
  PerceptualLoss lpips;
  std::map<std::string, at::Tensor> params;
  for (const auto& p : lpips->named_parameters()) params[p.key()] = p.value();
  fill_seeded(params, [](const std::string& name, at::Tensor t) {
    return name.rfind("lin", 0) == 0 ? t.abs() : t;
  });
  const auto& f = fixture();
  const at::Tensor got = lpips->forward(f.tensor("lpips.input.a"), f.tensor("lpips.input.b"));
  EXPECT_LE(relative_error(got, f.tensor("lpips.output")), 1e-5);  // fp32 tolerance
  EXPECT_TRUE(torch::allclose(lpips->forward(f.tensor("lpips.input.a"), f.tensor("lpips.input.a")),
                              torch::zeros({2})));

  // The same weights saved under the lpips names load back into a fresh module.
  const std::string path =
      (std::filesystem::temp_directory_path() / "vilau_lpips.safetensors").string();
  io::NamedTensors named(params.begin(), params.end());
  io::save_safetensors(path, named);
  PerceptualLoss loaded;
  loaded->load(path);
  EXPECT_TRUE(
      torch::equal(loaded->forward(f.tensor("lpips.input.a"), f.tensor("lpips.input.b")), got));
  named.pop_back();
  io::save_safetensors(path, named);
  EXPECT_THAT(vilau::testing::error_of<ShapeError>([&] { PerceptualLoss().ptr()->load(path); }),
              ::testing::HasSubstr("no such tensor"));
  std::filesystem::remove(path);
}

TEST(Losses, PatchDiscriminatorMatchesReference) {
  PatchDiscriminator disc(3, 64, 2);
  disc->eval();
  std::map<std::string, at::Tensor> state;
  for (const auto& p : disc->named_parameters())
    state[p.key().substr(5)] = p.value();  // drop "main."
  for (const auto& b : disc->named_buffers()) {
    if (b.key().find("num_batches_tracked") == std::string::npos)
      state[b.key().substr(5)] = b.value();
  }
  fill_seeded(state, [](const std::string& name, at::Tensor t) {
    if (name.find("running_var") != std::string::npos) return t.abs() + 0.5;
    if (t.dim() == 1 && name.find("weight") != std::string::npos) return t + 1.0;
    return t;
  });
  const auto& f = fixture();
  const at::Tensor out = disc->forward(f.tensor("disc.input"));
  EXPECT_EQ(out.sizes().vec(), (std::vector<int64_t>{2, 1, 6, 6}));
  EXPECT_LE(relative_error(out, f.tensor("disc.output")), 1e-5);
}

TEST(Losses, HingeAndGeneratorLosses) {
  const at::Tensor real = torch::tensor({2.0f, 0.5f}), fake = torch::tensor({-2.0f, 0.0f});
  // relu(1 - real) = [0, 0.5], relu(1 + fake) = [0, 1]: (0.25 + 0.5) / 2.
  EXPECT_FLOAT_EQ(hinge_discriminator_loss(real, fake).item<float>(), 0.375f);
  EXPECT_FLOAT_EQ(generator_loss(fake).item<float>(), 1.0f);
}

TEST(Losses, AdaptiveWeightIsTheGradientRatio) {
  const at::Tensor w = torch::tensor({1.0f, 2.0f}, torch::requires_grad());
  const at::Tensor nll = (w * torch::tensor({3.0f, 4.0f})).sum();  // gradient (3, 4), norm 5
  const at::Tensor g = (w * 0.5).sum();  // gradient (0.5, 0.5), norm 0.7071
  const at::Tensor weight = adaptive_gan_weight(nll, g, w, 0.75);
  EXPECT_NEAR(weight.item<double>(), 5.0 / (std::sqrt(0.5) + 1e-4) * 0.75, 1e-4);
  EXPECT_FALSE(weight.requires_grad());
}

TEST(Losses, CombinedWithConfiguredWeights) {
  TowerLossConfig config;
  config.contrastive_weight = 2.0;
  config.gan_start_step = 10;
  TowerLossTerms terms{torch::tensor(1.0f), torch::tensor(3.0f), torch::tensor(5.0f),
                       torch::tensor(7.0f), torch::tensor(11.0f)};
  // 2*1 + 1*3 + 1*5 + 0.25*11, and the GAN term only from step 10, scaled by 0.5.
  EXPECT_FLOAT_EQ(combine_tower_losses(terms, config, torch::tensor(0.5f), 9).item<float>(),
                  12.75f);
  EXPECT_FLOAT_EQ(combine_tower_losses(terms, config, torch::tensor(0.5f), 10).item<float>(),
                  16.25f);
  terms.perceptual = at::Tensor();
  EXPECT_FLOAT_EQ(combine_tower_losses(terms, config, torch::tensor(0.5f), 0).item<float>(), 7.75f);
  EXPECT_THROW(combine_tower_losses(TowerLossTerms{}, config, at::Tensor(), 0), ConfigError);
}

TEST(Losses, ConfigValidation) {
  TowerLossConfig config;
  EXPECT_NO_THROW(config.validate("loss"));
  config.contrastive = "triplet";
  EXPECT_THAT(vilau::testing::error_of<ConfigError>([&] { config.validate("loss"); }),
              ::testing::HasSubstr("loss.contrastive"));
}

}  // namespace
}  // namespace vilau
