// The decode steps a CUDA graph can replay, proven on the CPU: OpTrace counts what a step
// dispatches; an image position and a text token step run the same operators on the same
// shapes at every position, never wait for the host, and give the growing loop's outputs.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <stdexcept>

#include "test_util.h"
#include "vilau/config.h"
#include "vilau/core/op_trace.h"
#include "vilau/infer/batching.h"
#include "vilau/infer/image_generation.h"
#include "vilau/infer/step_graph.h"
#include "vilau/infer/text_generation.h"

namespace vilau {
namespace {

constexpr int64_t kImStart = 512;  // the tiny preset's <im_start>

TEST(OpTrace, CountsOperatorsKernelsAndHostWaits) {
  const at::Tensor a = at::randn({4, 8}), b = at::randn({4, 8});
  OpTrace trace;
  const at::Tensor c = (a + b).transpose(0, 1).reshape({32});
  const double total = c.sum().item<double>();
  trace.stop();
  EXPECT_TRUE(std::isfinite(total));
  EXPECT_GE(trace.ops(), 5);
  EXPECT_GE(trace.ops(), trace.top_level_ops());
  // add, the copy a reshape of a transposed view makes, sum and item's read of the
  // result; the views are not kernels.
  EXPECT_EQ(trace.kernels(), 4);
  EXPECT_EQ(trace.host_syncs(), 1);  // item()
  const int64_t recorded = trace.ops();
  (void)(a * b);  // stopped: nothing more is recorded
  EXPECT_EQ(trace.ops(), recorded);
}

TEST(OpTrace, MovesToTheHostAreWaitsAndTracesDoNotNest) {
  OpTrace trace;
  EXPECT_THROW(OpTrace(), std::logic_error);
  (void)at::ones({3}).cpu();
  EXPECT_EQ(trace.host_syncs(), 1);
}

class InferStatic : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::manual_seed(0);
    model_ = VilaU(*load_run_config(VILAU_SOURCE_DIR "/configs/presets/tiny.yaml").model);
    model_->eval();
  }

  // Traces steps `first` and `second` of a generation run with `options`.
  std::pair<OpTrace*, OpTrace*> trace_image_steps(const ImageOptions& options, int64_t first,
                                                  int64_t second) {
    at::Generator rng = make_generator(at::kCPU, 5);
    GenerationTimes times;
    ImageSession session(*model_, {{1, 40, 41, 42, kImStart}, {1, 50, kImStart}}, {1, kImStart},
                         options, rng, times);
    for (int64_t i = 0; i <= second; ++i) {
      if (i == first || i == second) {
        traces_.push_back(std::make_unique<OpTrace>());
        session.step();
        traces_.back()->stop();
      } else {
        session.step();
      }
    }
    return {traces_[traces_.size() - 2].get(), traces_.back().get()};
  }

  VilaU model_{nullptr};
  std::vector<std::unique_ptr<OpTrace>> traces_;
};

TEST_F(InferStatic, ImagePositionsAreOneStaticStepWithoutHostWaits) {
  const auto [a, b] = trace_image_steps({}, 2, 9);
  EXPECT_EQ(a->signature(), b->signature());
  EXPECT_EQ(a->host_syncs(), 0);
  EXPECT_EQ(b->host_syncs(), 0);
  // The growing loop (cache views and the mask lengthen every step) is told apart.
  ImageOptions growing;
  growing.llm_cache = false;
  const auto [c, d] = trace_image_steps(growing, 2, 9);
  EXPECT_NE(c->signature(), d->signature());
}

TEST_F(InferStatic, StaticImageStepsGiveTheGrowingLoopsCodesAndPixels) {
  ImageGenerator generator(model_);
  const auto codes = [&](const ImageOptions& options) {
    at::Generator rng = make_generator(at::kCPU, 21);
    return generator.generate_codes({{1, 40, 41, 42, 43, kImStart}, {1, 50, kImStart}},
                                    {1, 60, kImStart}, options, rng);
  };
  ImageOptions growing;
  growing.llm_cache = false;
  growing.depth_cache = false;
  const at::Tensor expected = codes(growing), actual = codes({});
  EXPECT_TRUE(at::equal(actual, expected));
  testing::expect_bitwise_equal(generator.decode(actual), generator.decode(expected));
}

TEST_F(InferStatic, TokenStepsAreStaticWithOneHostReadEach) {
  torch::NoGradGuard no_grad;
  const ExpandedInputs in =
      model_->expand(left_padded_batch({{1, 80, 81, 82}, {1, 90}}, 0, at::kCPU), Padding::left);
  at::Generator rng = make_generator(at::kCPU, 3);
  TokenDecoder decoder(*model_, in, 12, {0.9, 0, 0.6}, rng, true, true);
  std::vector<std::string> signatures;
  for (int64_t i = 0; i < 8; ++i) {
    OpTrace trace;
    (void)decoder.tokens().cpu();  // what the engine reads per token
    decoder.step();
    trace.stop();
    EXPECT_EQ(trace.host_syncs(), 1);
    signatures.push_back(trace.signature());
  }
  EXPECT_EQ(signatures[2], signatures[7]);

  // The same tokens as the loop that recomputes everything at every step.
  at::Generator a = make_generator(at::kCPU, 4), b = make_generator(at::kCPU, 4);
  TokenDecoder cached(*model_, in, 12, {0.9, 0, 0.6}, a, true, false);
  TokenDecoder recomputed(*model_, in, 12, {0.9, 0, 0.6}, b, false, false);
  for (int64_t i = 0; i < 10; ++i) {
    EXPECT_TRUE(at::equal(cached.tokens(), recomputed.tokens())) << "token " << i;
    cached.step();
    recomputed.step();
  }
}

// Run where a GPU is present (scripts/gpu_check.sh): replayed graphs give eager's codes.
TEST_F(InferStatic, CudaGraphReplayGivesTheEagerCodes) {
  const at::Device cuda(at::kCUDA, 0);
  if (!cuda_graphs_available(cuda) || !torch::cuda::is_available()) {
    GTEST_SKIP() << "needs a CUDA build and a GPU";
  }
  model_->to(cuda);
  ImageGenerator generator(model_);
  const auto codes = [&](bool graphs) {
    ImageOptions options;
    options.cuda_graphs = graphs;
    at::Generator rng = make_generator(cuda, 8);
    return generator
        .generate_codes({{1, 40, 41, kImStart}, {1, 50, kImStart}}, {1, kImStart}, options, rng)
        .cpu();
  };
  EXPECT_TRUE(at::equal(codes(true), codes(false)));
}

}  // namespace
}  // namespace vilau
