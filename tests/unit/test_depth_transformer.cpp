// The depth transformer and the projector against VILA-U's own RQTransformer and
// MultimodalProjector on tiny random models (tests/data/depth/depth_tiny.safetensors, from
// tests/reference/make_depth_fixtures.py).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "test_util.h"
#include "vilau/core/error.h"
#include "vilau/io/safetensors.h"
#include "vilau/llm/depth_transformer.h"
#include "vilau/model/load_module.h"
#include "vilau/model/projector.h"

namespace vilau {
namespace {

using ::testing::HasSubstr;

// Max relative error 1e-5 in fp32: both sides run the same operations in the same order, and
// the margin covers kernels that sum in another order.
using vilau::testing::relative_error;

constexpr double kMaxRelError = 1e-5;
constexpr int64_t kDepth = 3, kCodebook = 16, kCodeDim = 8, kLlmHidden = 24;

DepthTransformerConfig tiny_config() {
  DepthTransformerConfig c;
  c.embed_dim = 32;
  c.num_layers = 2;
  c.num_heads = 4;
  return c;
}

class DepthTransformerTiny : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    file_ = new io::SafetensorsFile(
        io::SafetensorsFile::open(VILAU_TEST_DATA_DIR "/depth/depth_tiny.safetensors"));
  }
  static void TearDownTestSuite() {
    delete file_;
    file_ = nullptr;
  }

  void SetUp() override {
    load_module(*model_, lookup(), "rqtransformer.");
    load_module(*projector_, lookup(), "mm_projector.");
    model_->eval();
    projector_->eval();
  }

  static TensorLookup lookup() { return vilau::testing::lookup_in(*file_); }
  static at::Tensor get(const std::string& name) { return file_->tensor(name); }

  static std::map<std::string, std::vector<int64_t>> stored(const std::string& prefix) {
    return vilau::testing::stored_shapes(*file_, prefix);
  }

  // Embeddings [n, C] of codes at depth d, from the fixture's per-depth codebooks [D, K, C].
  static at::Tensor embed(const at::Tensor& codes, int64_t d) {
    return get("codebooks")[d].index_select(0, codes.reshape({-1}));
  }

  static io::SafetensorsFile* file_;
  DepthTransformer model_{tiny_config(), kDepth, kCodebook, kCodeDim, kLlmHidden};
  MultimodalProjector projector_{kCodeDim, kLlmHidden};
};

io::SafetensorsFile* DepthTransformerTiny::file_ = nullptr;

TEST_F(DepthTransformerTiny, ParameterNamesAndShapesAreOfficial) {
  EXPECT_EQ(vilau::testing::parameter_shapes(*model_), stored("rqtransformer."));
  EXPECT_EQ(vilau::testing::parameter_shapes(*projector_), stored("mm_projector."));
  EXPECT_EQ(model_->named_buffers().size(), 0u);
  EXPECT_EQ(projector_->named_buffers().size(), 0u);
}

TEST_F(DepthTransformerTiny, TrainingForwardMatchesReference) {
  torch::NoGradGuard no_grad;
  // The prefix sums the official forward builds from the codes: cumsum over depths.
  const at::Tensor codes = get("input.train.codes");  // [2, 3, D]
  at::Tensor sum = at::zeros({codes.size(0) * codes.size(1), kCodeDim});
  std::vector<at::Tensor> sums;
  for (int64_t d = 0; d + 1 < kDepth; ++d) {
    sum = sum + embed(codes.select(-1, d), d);
    sums.push_back(sum);
  }
  const at::Tensor prefix = get("input.train.code_prefix_sums");
  EXPECT_LE(relative_error(at::stack(sums, 1).view(prefix.sizes()), prefix), kMaxRelError);

  const at::Tensor logits = model_(get("input.train.hidden"), prefix);
  EXPECT_LE(relative_error(logits, get("output.train.logits")), kMaxRelError);
}

TEST_F(DepthTransformerTiny, GenerationStepsMatchReference) {
  torch::NoGradGuard no_grad;
  // Rows 0-1 conditional, 2-3 their unconditional twins; both halves get the same codes.
  const at::Tensor hidden = get("input.gen.hidden").squeeze(1);               // [4, H]
  const at::Tensor codes = get("input.gen.codes").squeeze(1).repeat({2, 1});  // [4, D]
  const at::Tensor expected = get("output.gen.logits");                       // [4, D, K]
  DepthKvCache cache;
  at::Tensor sum = at::zeros({hidden.size(0), kCodeDim});
  std::vector<at::Tensor> logits{model_->step(hidden, cache)};
  for (int64_t d = 0; d < kDepth; ++d) {
    sum = sum + embed(codes.select(1, d), d);
    if (d + 1 < kDepth) {
      logits.push_back(model_->step(sum, cache));
    }
  }
  EXPECT_EQ(cache.depth(), kDepth);
  for (int64_t d = 0; d < kDepth; ++d) {
    EXPECT_LE(relative_error(logits[d], expected.select(1, d)), kMaxRelError) << "depth " << d;
  }
  // What the official sampler saw: uncond + cfg * (cond - uncond).
  const at::Tensor all = at::stack(logits, 1);
  const at::Tensor cond = all.slice(0, 0, 2), uncond = all.slice(0, 2, 4);
  EXPECT_LE(relative_error(uncond + 3.0 * (cond - uncond), get("output.gen.cfg_logits")),
            kMaxRelError);
  EXPECT_LE(relative_error(sum.unsqueeze(1), get("output.gen.features")), kMaxRelError);
}

TEST_F(DepthTransformerTiny, CachedStepsEqualFullRecompute) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(7);
  const int64_t rows = 5;
  const at::Tensor hidden = torch::randn({rows, kLlmHidden});
  const at::Tensor prefix = torch::randn({rows, kDepth - 1, kCodeDim});
  const at::Tensor full = model_(hidden, prefix);
  DepthKvCache cache;
  for (int64_t d = 0; d < kDepth; ++d) {
    const at::Tensor x = d == 0 ? hidden : prefix.select(1, d - 1);
    EXPECT_LE(relative_error(model_->step(x, cache), full.select(1, d)), kMaxRelError)
        << "depth " << d;
  }
  // A depth only sees what comes before it.
  const at::Tensor changed = prefix.clone();
  changed.select(1, kDepth - 2).add_(1.0);
  const at::Tensor again = model_(hidden, changed);
  testing::expect_bitwise_equal(again.slice(1, 0, kDepth - 1), full.slice(1, 0, kDepth - 1));
  // A cleared cache starts a new generation.
  cache.clear();
  EXPECT_LE(relative_error(model_->step(hidden, cache), full.select(1, 0)), kMaxRelError);
}

TEST_F(DepthTransformerTiny, WrongInputsAreShapeErrors) {
  torch::NoGradGuard no_grad;
  DepthKvCache cache;
  EXPECT_THAT(testing::error_of<ShapeError>([&] {
                model_->step(torch::zeros({2, kCodeDim}), cache);
              }),
              HasSubstr("[2, 24]"));
  model_->step(torch::zeros({2, kLlmHidden}), cache);
  EXPECT_THAT(testing::error_of<ShapeError>([&] {
                model_->step(torch::zeros({3, kCodeDim}), cache);
              }),
              HasSubstr("[2, 8]"));
  model_->step(torch::zeros({2, kCodeDim}), cache);
  model_->step(torch::zeros({2, kCodeDim}), cache);
  EXPECT_THAT(testing::error_of<ShapeError>([&] {
                model_->step(torch::zeros({2, kCodeDim}), cache);
              }),
              HasSubstr("below 3"));
  EXPECT_THAT(testing::error_of<ShapeError>([&] {
                model_(torch::zeros({2, kLlmHidden}), torch::zeros({2, kDepth, kCodeDim}));
              }),
              HasSubstr("[2, 2, 8]"));
}

TEST_F(DepthTransformerTiny, ProjectorMatchesReference) {
  torch::NoGradGuard no_grad;
  EXPECT_LE(relative_error(projector_(get("input.projector")), get("output.projector")),
            kMaxRelError);
}

TEST_F(DepthTransformerTiny, EveryParameterGetsAGradient) {
  model_->train();
  torch::manual_seed(3);
  const at::Tensor codes = get("input.train.codes");
  const at::Tensor logits = model_(get("input.train.hidden"), get("input.train.code_prefix_sums"));
  // Dropout is on in training: the same inputs no longer give the eval logits.
  EXPECT_GT(relative_error(logits.detach(), get("output.train.logits")), 1e-3);
  const at::Tensor loss =
      torch::nn::functional::cross_entropy(logits.reshape({-1, kCodebook}), codes.reshape({-1}));
  loss.backward();
  for (const auto& p : model_->named_parameters()) {
    const at::Tensor g = p.value().grad();
    ASSERT_TRUE(g.defined()) << p.key();
    EXPECT_TRUE(g.isfinite().all().item<bool>()) << p.key();
    EXPECT_GT(g.abs().sum().item<double>(), 0.0) << p.key();
  }
}

}  // namespace
}  // namespace vilau
