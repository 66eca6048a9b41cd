// The assembled vision tower: official names in, codes and pixels out.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "test_util.h"
#include "vilau/config.h"
#include "vilau/core/error.h"
#include "vilau/model/state_dict_adapter.h"
#include "vilau/vision/vision_tower.h"

namespace vilau {
namespace {

ModelConfig tiny() { return *load_run_config(VILAU_SOURCE_DIR "/configs/presets/tiny.yaml").model; }

// Random tensors under the official vision_tower/ names, as a checkpoint would hold them.
std::map<std::string, at::Tensor> official_tower(const ModelConfig& config) {
  torch::manual_seed(5);
  std::map<std::string, at::Tensor> out;
  for (const ExpectedTensor& t : expected_tensors(config)) {
    const auto [component, name] = to_official_name(t.name);
    if (component == Component::vision_tower && name.rfind("rqvaesiglip.", 0) == 0) {
      out[name] = torch::randn(t.shape) * 0.1;
    }
  }
  return out;
}

TensorLookup lookup_in(const std::map<std::string, at::Tensor>& tensors) {
  return [&tensors](const std::string& name) {
    const auto it = tensors.find(name);
    return it == tensors.end() ? at::Tensor() : it->second;
  };
}

TEST(VisionTower, LoadsEveryOfficialTensorByName) {
  const ModelConfig config = tiny();
  const auto tensors = official_tower(config);
  VisionTower tower(config.vision_tower);
  tower->load(lookup_in(tensors));
  int64_t checked = 0;
  for (const auto& item : tower->named_parameters()) {
    std::string name = "rqvaesiglip." + item.key();
    if (const auto pos = name.find("pixel_decoder."); pos != std::string::npos) name.erase(pos, 14);
    ASSERT_TRUE(tensors.count(name)) << name;
    EXPECT_TRUE(torch::equal(item.value(), tensors.at(name))) << name;
    ++checked;
  }
  // Every official tensor is a parameter or an EMA buffer of the module.
  EXPECT_EQ(checked + 2 * config.vision_tower.quantizer.depth,
            static_cast<int64_t>(tensors.size()));
}

TEST(VisionTower, OfficialStateDictIsTheInverseOfLoad) {
  const ModelConfig config = tiny();
  const auto tensors = official_tower(config);
  VisionTower tower(config.vision_tower);
  tower->load(lookup_in(tensors));
  const auto exported = tower->official_state_dict();
  ASSERT_EQ(exported.size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    ASSERT_TRUE(exported.count(name)) << name;
    EXPECT_TRUE(torch::equal(exported.at(name), t)) << name;
  }
}

TEST(VisionTower, EncodeDecodeIsConsistent) {
  const ModelConfig config = tiny();
  const auto tensors = official_tower(config);
  VisionTower tower(config.vision_tower);
  tower->load(lookup_in(tensors));
  tower->eval();
  torch::NoGradGuard no_grad;
  const at::Tensor pixels = torch::rand({2, 3, 32, 32}) * 2 - 1;
  const auto encoded = tower->encode(pixels);
  EXPECT_EQ(encoded.codes.sizes().vec(), (std::vector<int64_t>{2, 4, 4, 2}));
  EXPECT_EQ(encoded.z_q.sizes().vec(), (std::vector<int64_t>{2, 4, 4, 32}));
  EXPECT_TRUE(
      torch::allclose(tower->quantizer->embed_codes(encoded.codes).sum, encoded.z_q, 1e-5, 1e-5));
  const at::Tensor image = tower->decode_codes(encoded.codes);
  EXPECT_EQ(image.sizes().vec(), (std::vector<int64_t>{2, 3, 32, 32}));
  EXPECT_TRUE(torch::allclose(tower->decode(encoded.z_q), image, 1e-4, 1e-4));
}

// The straight-through estimator lets a loss on the decoded image train the encoder,
// while the codebooks learn only by EMA.
TEST(VisionTower, GradientsReachTheEncoder) {
  const ModelConfig config = tiny();
  VisionTower tower(config.vision_tower);
  tower->eval();  // no EMA update in this step
  const auto encoded = tower->encode(torch::rand({1, 3, 32, 32}) * 2 - 1);
  (tower->decode(encoded.z_q).pow(2).mean() + encoded.commitment_loss).backward();
  for (const auto& p : tower->vision->named_parameters()) {
    if (p.key().rfind("encoder.layers.2.", 0) == 0 || p.key().rfind("post_layernorm", 0) == 0 ||
        p.key().rfind("head.", 0) == 0) {
      continue;  // after the layer the quantizer reads: no path to the loss
    }
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key();
  }
  for (const auto& p : tower->quantizer->named_parameters()) {
    EXPECT_FALSE(p.value().grad().defined()) << p.key();
  }
}

TEST(VisionTower, LogitAliasAndMissingTensors) {
  const ModelConfig config = tiny();
  auto tensors = official_tower(config);
  // The official save may keep only the alias of the logit scalars.
  tensors["rqvaesiglip.logit_scale"] = tensors.at("rqvaesiglip.siglip_model.logit_scale") + 1;
  tensors.erase("rqvaesiglip.siglip_model.logit_scale");
  VisionTower tower(config.vision_tower);
  tower->load(lookup_in(tensors));
  EXPECT_TRUE(torch::equal(tower->logit_scale, tensors.at("rqvaesiglip.logit_scale")));

  tensors.erase("rqvaesiglip.decoder.conv_out.weight");
  EXPECT_THAT(vilau::testing::error_of<ShapeError>([&] { tower->load(lookup_in(tensors)); }),
              ::testing::AllOf(::testing::HasSubstr("rqvaesiglip.decoder.conv_out.weight"),
                               ::testing::HasSubstr("no such tensor")));
}

}  // namespace
}  // namespace vilau
