// The SigLIP towers against VILA-U's own modeling_siglip on a tiny random model
// (tests/data/siglip/siglip_tiny.safetensors, from tests/reference/make_siglip_fixtures.py).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <string>

#include "test_util.h"
#include "vilau/core/error.h"
#include "vilau/io/safetensors.h"
#include "vilau/model/load_module.h"
#include "vilau/vision/siglip.h"

namespace vilau {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

// Max relative error 1e-5 in fp32. Both sides run the same operations in the same order; with
// the LibTorch that PyTorch 2.13 ships they agree bit for bit, and the margin covers other
// builds whose kernels sum in another order.
using vilau::testing::relative_error;

constexpr double kMaxRelError = 1e-5;

SiglipVisionConfig tiny_vision() {
  SiglipVisionConfig c;
  c.image_size = 32;
  c.patch_size = 8;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_layers = 3;
  c.num_heads = 4;
  return c;
}

SiglipTextConfig tiny_text() {
  SiglipTextConfig c;
  c.vocab_size = 512;
  c.max_positions = 16;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_layers = 2;
  c.num_heads = 4;
  return c;
}

class SiglipTiny : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    file_ = new io::SafetensorsFile(
        io::SafetensorsFile::open(VILAU_TEST_DATA_DIR "/siglip/siglip_tiny.safetensors"));
  }
  static void TearDownTestSuite() {
    delete file_;
    file_ = nullptr;
  }

  void SetUp() override {
    load_module(*vision_, lookup(), "vision_model.");
    load_module(*text_, lookup(), "text_model.");
    vision_->eval();
    text_->eval();
  }

  static TensorLookup lookup() { return vilau::testing::lookup_in(*file_); }
  static at::Tensor get(const std::string& name) { return file_->tensor(name); }

  static std::map<std::string, std::vector<int64_t>> stored(const std::string& prefix) {
    return vilau::testing::stored_shapes(*file_, prefix);
  }

  static io::SafetensorsFile* file_;
  torch::NoGradGuard no_grad_;
  SiglipVisionTransformer vision_{tiny_vision()};
  SiglipTextTransformer text_{tiny_text()};
};

io::SafetensorsFile* SiglipTiny::file_ = nullptr;

TEST_F(SiglipTiny, ParameterNamesAndShapesAreHfs) {
  EXPECT_EQ(vilau::testing::parameter_shapes(*vision_), stored("vision_model."));
  EXPECT_EQ(vilau::testing::parameter_shapes(*text_), stored("text_model."));
  EXPECT_EQ(vision_->named_buffers().size(), 0u);
  EXPECT_EQ(text_->named_buffers().size(), 0u);
}

TEST_F(SiglipTiny, VisionHiddenStatesMatchReference) {
  const auto states = vision_->hidden_states(get("input.pixel_values"));
  ASSERT_EQ(states.size(), 4u);
  for (size_t i = 0; i < states.size(); ++i) {
    const std::string name = "output.vision.hidden_states." + std::to_string(i);
    EXPECT_LE(relative_error(states[i], get(name)), kMaxRelError) << name;
  }
}

TEST_F(SiglipTiny, VisionOutputsMatchReference) {
  const SiglipOutput out = vision_->forward(get("input.pixel_values"));
  EXPECT_LE(relative_error(out.last_hidden_state, get("output.vision.last_hidden_state")),
            kMaxRelError);
  EXPECT_LE(relative_error(out.pooled, get("output.vision.pooler_output")), kMaxRelError);
}

TEST_F(SiglipTiny, GridIsTheSelectedLayerAsAnImage) {
  const at::Tensor pixels = get("input.pixel_values");
  ASSERT_EQ(vision_->feature_layers(), 2);  // 3 layers, select_layer -2
  const at::Tensor grid = vision_->grid(pixels);
  ASSERT_EQ(grid.sizes(), (std::vector<int64_t>{2, 4, 4, 32}));
  // Row-major over the patch grid: token r * 4 + c is patch (r, c).
  const at::Tensor selected = get("output.vision.hidden_states.2");
  EXPECT_LE(relative_error(grid, selected.view({2, 4, 4, 32})), kMaxRelError);
  testing::expect_bitwise_equal(grid.view({2, 16, 32}), vision_->forward_features(pixels, 2));
}

TEST_F(SiglipTiny, TextOutputsMatchReference) {
  const at::Tensor ids = get("input.input_ids");
  const auto states = text_->hidden_states(ids);
  ASSERT_EQ(states.size(), 3u);
  for (size_t i = 0; i < states.size(); ++i) {
    const std::string name = "output.text.hidden_states." + std::to_string(i);
    EXPECT_LE(relative_error(states[i], get(name)), kMaxRelError) << name;
  }
  const SiglipOutput out = text_->forward(ids);
  EXPECT_LE(relative_error(out.last_hidden_state, get("output.text.last_hidden_state")),
            kMaxRelError);
  EXPECT_LE(relative_error(out.pooled, get("output.text.pooler_output")), kMaxRelError);
}

TEST_F(SiglipTiny, SigmoidLogitsMatchReference) {
  // SiglipModel's logits: cosine similarity * exp(logit_scale) + logit_bias.
  const at::Tensor image = vision_->forward(get("input.pixel_values")).pooled;
  const at::Tensor text = text_->forward(get("input.input_ids")).pooled;
  const auto unit = [](const at::Tensor& x) { return x / x.norm(2, -1, true); };
  const at::Tensor logits =
      at::matmul(unit(image), unit(text).t()) * get("logit_scale").exp() + get("logit_bias");
  EXPECT_LE(relative_error(logits, get("output.logits_per_image")), kMaxRelError);
}

TEST_F(SiglipTiny, WrongShapeNamesTheTensor) {
  const std::string bad = "vision_model.encoder.layers.1.mlp.fc1.weight";
  const TensorLookup wrong = [&](const std::string& name) {
    return name == bad ? torch::zeros({64, 31}) : lookup()(name);
  };
  SiglipVisionTransformer fresh(tiny_vision());
  const at::Tensor before = fresh->embeddings->patch_embedding->weight.clone();
  const std::string message =
      testing::error_of<ShapeError>([&] { load_module(*fresh, wrong, "vision_model."); });
  EXPECT_THAT(message, AllOf(HasSubstr(bad), HasSubstr("[64, 32]"), HasSubstr("[64, 31]")));
  // Nothing is copied when any tensor is wrong.
  testing::expect_bitwise_equal(fresh->embeddings->patch_embedding->weight, before);
}

TEST_F(SiglipTiny, MissingTensorIsAShapeError) {
  const std::string message = testing::error_of<ShapeError>(
      [&] { load_module(*text_, lookup(), "rqvaesiglip.siglip_model.text_model."); });
  EXPECT_THAT(message, AllOf(HasSubstr("rqvaesiglip.siglip_model.text_model."),
                             HasSubstr("no such tensor")));
}

}  // namespace
}  // namespace vilau
