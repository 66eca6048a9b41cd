// PixelDecoder: official parameter names, output shapes of the released configurations,
// and the behaviour of its blocks.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>

#include "test_util.h"
#include "vilau/config.h"
#include "vilau/core/error.h"
#include "vilau/io/safetensors.h"
#include "vilau/model/load_module.h"
#include "vilau/model/state_dict_adapter.h"
#include "vilau/vision/pixel_decoder.h"

namespace vilau {
namespace {

const std::string kPresets = VILAU_SOURCE_DIR "/configs/presets/";

ModelConfig preset(const std::string& name) {
  return *load_run_config(kPresets + name + ".yaml").model;
}

// The decoder's tensors must be exactly those the checkpoint adapter expects.
void expect_official_names(const ModelConfig& config) {
  const PixelDecoder decoder(config.vision_tower.decoder, config.vision_tower.vision.hidden_size);
  std::map<std::string, std::vector<int64_t>> ours, expected;
  for (const auto& p : decoder->named_parameters()) {
    ours["vision_tower.rqvaesiglip." + p.key()] = p.value().sizes().vec();
  }
  for (const ExpectedTensor& t : expected_tensors(config)) {
    if (component_group(t.name) == "vision_tower.pixel_decoder") {
      expected[t.name] = t.shape;
    }
  }
  EXPECT_EQ(ours, expected);
}

TEST(PixelDecoder, ParametersCarryTheOfficialNames) {
  expect_official_names(preset("tiny"));
  expect_official_names(preset("7b-256"));
}

TEST(PixelDecoder, OutputShapesOfThe256And384Models) {
  torch::NoGradGuard no_grad;
  for (const auto& [name, grid, pixels] :
       {std::tuple<std::string, int64_t, int64_t>{"7b-256", 16, 256}, {"7b-384", 27, 384}}) {
    SCOPED_TRACE(name);
    const ModelConfig config = preset(name);
    // Shapes follow from the geometry (grid, latent_shape, levels), not the widths: the
    // preset's geometry at the narrowest legal width keeps this test fast.
    PixelDecoderConfig geometry = config.vision_tower.decoder;
    geometry.ch = 32;
    geometry.z_channels = 8;
    const int64_t c = config.vision_tower.vision.hidden_size;
    PixelDecoder decoder(geometry, c);
    const at::Tensor out = decoder->forward(torch::randn({1, grid, grid, c}));
    EXPECT_EQ(out.sizes().vec(), (std::vector<int64_t>{1, 3, pixels, pixels}));
  }
}

TEST(PixelDecoder, TinyDecodesAndRejectsWrongInput) {
  torch::manual_seed(0);
  const ModelConfig config = preset("tiny");
  PixelDecoder decoder(config.vision_tower.decoder, 32);
  decoder->eval();
  const at::Tensor z = torch::randn({2, 4, 4, 32});
  const at::Tensor out = decoder->forward(z);
  EXPECT_EQ(out.sizes().vec(), (std::vector<int64_t>{2, 3, 32, 32}));
  EXPECT_TRUE(torch::isfinite(out).all().item<bool>());
  // Batch items are decoded independently.
  EXPECT_TRUE(torch::allclose(decoder->forward(z.slice(0, 1, 2)), out.slice(0, 1, 2), 1e-5, 1e-5));
  const std::string msg =
      vilau::testing::error_of<ShapeError>([&] { decoder->forward(torch::randn({2, 4, 4, 31})); });
  EXPECT_NE(msg.find("expected [B, H, W, 32]"), std::string::npos) << msg;
}

// The attention block equals the official bmm/softmax formulation.
// Against the official decoder (RQ-VAE's Decoder from VILA-U's modules.py, with decode()'s
// post_quant_conv and latent resize; tests/reference/make_pixel_decoder_fixtures.py), fp32.
TEST(PixelDecoder, MatchesTheOfficialDecoder) {
  const io::SafetensorsFile f = io::SafetensorsFile::open(
      VILAU_TEST_DATA_DIR "/pixel_decoder/pixel_decoder_tiny.safetensors");
  PixelDecoderConfig config;
  config.ch = 32;
  config.ch_mult = {1, 2};
  config.num_res_blocks = 1;
  config.attn_resolutions = {4};
  config.z_channels = 8;
  config.resolution = 8;
  const auto relative_error = [](const at::Tensor& got, const at::Tensor& expected) {
    return ((got - expected).abs().max() / expected.abs().max()).item<double>();
  };
  torch::NoGradGuard no_grad;
  for (const bool resize : {false, true}) {
    SCOPED_TRACE(resize ? "5x5 resized to 4x4" : "4x4");
    PixelDecoderConfig c = config;
    if (resize) c.latent_shape = {4, 4};
    PixelDecoder decoder(c, 32);
    load_module(*decoder, vilau::testing::lookup_in(f), "rqvaesiglip.");
    decoder->eval();
    const at::Tensor z = f.tensor(resize ? "input.z_q_5x5" : "input.z_q");
    const at::Tensor expected = f.tensor(resize ? "output.pixels_5x5_to_4x4" : "output.pixels");
    const at::Tensor got = decoder(z);
    ASSERT_EQ(got.sizes(), expected.sizes());
    EXPECT_LT(relative_error(got, expected), 1e-5);
    // A weight one step off would show: the comparison is far tighter than that change.
    const at::Tensor w = decoder->named_parameters()["decoder.conv_out.bias"];
    w.add_(1e-3);
    EXPECT_GT(relative_error(decoder(z), expected), 1e-5);
  }
}

TEST(PixelDecoder, AttnBlockMatchesExplicitAttention) {
  torch::manual_seed(1);
  AttnBlock block(32);
  const at::Tensor x = torch::randn({2, 32, 3, 5});
  const at::Tensor got = block->forward(x);
  torch::NoGradGuard no_grad;
  const auto& m = block->named_children();
  auto apply = [&](const std::string& name, const at::Tensor& t) {
    return m[name]->as<torch::nn::Conv2d>()->forward(t);
  };
  const at::Tensor h = m["norm"]->as<torch::nn::GroupNorm>()->forward(x);
  const at::Tensor q = apply("q", h).reshape({2, 32, 15}).permute({0, 2, 1});
  const at::Tensor k = apply("k", h).reshape({2, 32, 15});
  const at::Tensor w = torch::softmax(torch::bmm(q, k) * std::pow(32.0, -0.5), 2);
  const at::Tensor v = apply("v", h).reshape({2, 32, 15});
  const at::Tensor expected =
      x + apply("proj_out", torch::bmm(v, w.permute({0, 2, 1})).reshape({2, 32, 3, 5}));
  EXPECT_TRUE(torch::allclose(got, expected, 1e-5, 1e-5));
}

}  // namespace
}  // namespace vilau
