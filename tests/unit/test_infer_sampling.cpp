// The samplers and the CFG combination: the official filtering order and its edge cases,
// seeded draws, and the two batch layouts.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "test_util.h"
#include "vilau/core/error.h"
#include "vilau/core/op_trace.h"
#include "vilau/infer/image_generation.h"
#include "vilau/infer/sampling.h"

namespace vilau {
namespace {

at::Tensor row(std::vector<float> values) { return at::tensor(values).unsqueeze(0); }

TEST(InferSampling, TopKKeepsTiesWithTheKthValue) {
  const at::Tensor p = sampling_probabilities(row({1, 3, 3, 2, 0}), {1.0, 1, 1.0});
  EXPECT_GT(p[0][1].item<float>(), 0);
  EXPECT_GT(p[0][2].item<float>(), 0);
  EXPECT_EQ(p[0].gt(0).sum().item<int64_t>(), 2);
  EXPECT_NEAR(p.sum().item<float>(), 1.0, 1e-6);
}

TEST(InferSampling, TopPDropsTokensWhosePrecedingMassReachesP) {
  const at::Tensor logits = at::log(row({0.15f, 0.5f, 0.05f, 0.3f}));
  // Sorted: 0.5, 0.3, 0.15, 0.05; mass before them: 0, 0.5, 0.8, 0.95.
  const at::Tensor p = sampling_probabilities(logits, {1.0, 0, 0.75});
  EXPECT_TRUE(at::allclose(p, row({0, 0.625f, 0, 0.375f}), 1e-5, 1e-6));
  // The most likely token stays even when it alone exceeds p.
  const at::Tensor only = sampling_probabilities(logits, {1.0, 0, 0.1});
  EXPECT_TRUE(at::allclose(only, row({0, 1, 0, 0})));
}

TEST(InferSampling, TopKRunsBeforeTopP) {
  // After top-2 the survivors renormalise to 0.625 / 0.375, so top-p 0.6 keeps one token;
  // on the unfiltered distribution it would keep two.
  const at::Tensor logits = at::log(row({0.15f, 0.5f, 0.05f, 0.3f}));
  EXPECT_EQ(sampling_probabilities(logits, {1.0, 2, 0.6}).gt(0).sum().item<int64_t>(), 1);
  EXPECT_EQ(sampling_probabilities(logits, {1.0, 0, 0.6}).gt(0).sum().item<int64_t>(), 2);
}

TEST(InferSampling, TemperatureScalesInFp32) {
  const at::Tensor logits = row({0, 1, 2}).to(at::kBFloat16);
  const at::Tensor p = sampling_probabilities(logits, {2.0, 0, 1.0});
  EXPECT_EQ(p.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::allclose(p, row({0, 0.5f, 1}).softmax(-1)));
}

TEST(InferSampling, GreedyTakesTheArgmax) {
  at::Generator g = make_generator(at::kCPU, 0);
  const at::Tensor logits = at::tensor({0.f, 5.f, 1.f, 2.f, 9.f, 3.f}).view({2, 3});
  EXPECT_TRUE(at::equal(sample_tokens(logits, {0.0, 0, 1.0}, g), at::tensor({1, 1}, at::kLong)));
}

TEST(InferSampling, SeededDrawsRepeat) {
  const at::Tensor logits = at::randn({4, 1000});
  at::Generator a = make_generator(at::kCPU, 7), b = make_generator(at::kCPU, 7),
                c = make_generator(at::kCPU, 8);
  const SamplerConfig config{1.0, 900, 0.96};
  std::vector<at::Tensor> first, second, other;
  for (int i = 0; i < 5; ++i) {
    first.push_back(sample_tokens(logits, config, a));
    second.push_back(sample_tokens(logits, config, b));
    other.push_back(sample_tokens(logits, config, c));
  }
  EXPECT_TRUE(at::equal(at::stack(first), at::stack(second)));
  EXPECT_FALSE(at::equal(at::stack(first), at::stack(other)));
}

TEST(InferSampling, DrawsFollowTheFilteredDistribution) {
  at::Generator g = make_generator(at::kCPU, 1);
  const at::Tensor logits = at::log(row({0.15f, 0.5f, 0.05f, 0.3f})).expand({20000, 4});
  const at::Tensor counts = at::bincount(sample_tokens(logits, {1.0, 0, 0.75}, g), {}, 4);
  EXPECT_EQ(counts[0].item<int64_t>() + counts[2].item<int64_t>(), 0);
  EXPECT_NEAR(counts[1].item<double>() / 20000.0, 0.625, 0.02);
}

// The official order on the whole row, written out as the official sample_from_logits
// does it: temperature, mask below the k-th value, softmax over all V, sort, top-p,
// renormalise. Returns the sorted probabilities and their ids.
std::pair<at::Tensor, at::Tensor> official_sorted(const at::Tensor& logits, const SamplerConfig& c,
                                                  bool top_p_first = false) {
  const double inf = std::numeric_limits<double>::infinity();
  at::Tensor scores = logits.to(at::kFloat) / c.temperature;
  const auto top_k = [&](at::Tensor x) {
    if (c.top_k == 0) return x;
    const at::Tensor kth = std::get<0>(x.topk(c.top_k, -1)).narrow(-1, c.top_k - 1, 1);
    return x.masked_fill(x.lt(kth), -inf);
  };
  const auto top_p = [&](const at::Tensor& x) {
    const auto [sorted, order] = x.softmax(-1).sort(-1, true);
    const at::Tensor before = sorted.cumsum(-1) - sorted;
    at::Tensor keep = sorted.masked_fill(before.ge(c.top_p), 0.0);
    keep.select(-1, 0).copy_(sorted.select(-1, 0));
    return std::make_pair(keep / keep.sum(-1, true), order);
  };
  if (top_p_first) {  // a wrong order, to show that the comparison can fail
    const auto [p, order] = top_p(scores);
    const at::Tensor kept = at::full_like(scores, -inf).scatter(-1, order, p.log());
    const auto [sorted, sorted_order] = top_k(kept).softmax(-1).sort(-1, true);
    return std::make_pair(sorted, sorted_order);
  }
  return top_p(top_k(scores));
}

// The token a uniform draw picks by inverting a sorted distribution, as the fast sampler
// does; also how far the draw lies from the nearest boundary between two tokens.
std::pair<int64_t, double> invert(const at::Tensor& probs, const at::Tensor& ids, float u) {
  const at::Tensor cdf = probs.cumsum(-1);
  const double target = u * (1.0 - 0x1p-23) * cdf[-1].item<double>();
  const auto acc = cdf.accessor<float, 1>();
  int64_t i = 0;
  while (i + 1 < cdf.size(0) && acc[i] <= target) ++i;
  double margin = std::abs(acc[i] - target);
  if (i > 0) margin = std::min(margin, std::abs(acc[i - 1] - target));
  return {ids[i].item<int64_t>(), margin};
}

// Top-k first and top-p within the survivors is the official distribution: on fixed
// uniforms it picks the official full-row order's token, except where a draw lies within
// rounding of the boundary between two tokens.
TEST(InferSampling, FastOrderDrawsWhatTheOfficialOrderDrawsOnFixedUniforms) {
  torch::manual_seed(3);
  const int64_t rows = 24, draws = 40;
  const at::Tensor logits = at::randn({rows, 16384}) * 2.0;
  for (const SamplerConfig config :
       {SamplerConfig{1.0, 900, 0.96}, SamplerConfig{0.9, 0, 0.6}, SamplerConfig{1.3, 7, 1.0}}) {
    const auto [probs, ids] = official_sorted(logits, config);
    const auto [wrong_probs, wrong_ids] = official_sorted(logits, config, true);
    int64_t compared = 0, near_boundary = 0, wrong_order_differs = 0;
    for (int64_t d = 0; d < draws; ++d) {
      const at::Tensor u = at::rand({rows, 1});
      const at::Tensor fast = sample_with_uniforms(logits, config, u);
      for (int64_t r = 0; r < rows; ++r) {
        const float ur = u[r][0].item<float>();
        const auto [token, margin] = invert(probs[r], ids[r], ur);
        ++compared;
        if (fast[r].item<int64_t>() != token) {
          EXPECT_LT(margin, 1e-6) << "row " << r << " draw " << d;
          ++near_boundary;
        }
        if (config.top_k > 0 && config.top_p < 1.0) {
          wrong_order_differs += invert(wrong_probs[r], wrong_ids[r], ur).first != token ? 1 : 0;
        }
      }
    }
    EXPECT_LE(near_boundary, compared / 500) << config.top_k << " " << config.top_p;
    if (config.top_k > 0 && config.top_p < 1.0) EXPECT_GT(wrong_order_differs, 0);
  }
}

TEST(InferSampling, TiesWithTheKthValueSurviveInTheFastOrder) {
  // Ten codes share the k-th value (k = 3): the official mask keeps all ten.
  std::vector<float> values(2000, -5.0f);
  values[0] = 4.0f;
  values[1] = 3.0f;
  for (int i = 10; i < 20; ++i) values[i] = 1.0f;
  const at::Tensor p = sampling_probabilities(row(values), {1.0, 3, 1.0});
  EXPECT_EQ(p.gt(0).sum().item<int64_t>(), 12);
  EXPECT_NEAR(p[0][15].item<double>(), p[0][10].item<double>(), 1e-7);
}

TEST(InferSampling, DrawsNeverWaitForTheHost) {
  at::Generator g = make_generator(at::kCPU, 2);
  const at::Tensor logits = at::randn({4, 5000});
  for (const SamplerConfig config : {SamplerConfig{1.0, 900, 0.96}, SamplerConfig{0.0, 0, 1.0}}) {
    OpTrace trace;
    sample_tokens(logits, config, g);
    trace.stop();
    EXPECT_EQ(trace.host_syncs(), 0);
    for (const OpTrace::Call& call : trace.calls()) {
      EXPECT_NE(call.name, "aten::multinomial");
      EXPECT_NE(call.name, "aten::sort") << "top-k runs before any sort of the row";
    }
  }
}

TEST(InferSampling, InvalidSettingsAreNamed) {
  EXPECT_THAT(testing::error_of<ConfigError>([] { SamplerConfig{-1.0, 0, 1.0}.validate("s"); }),
              ::testing::HasSubstr("s.temperature"));
  EXPECT_THAT(testing::error_of<ConfigError>([] { SamplerConfig{1.0, 0, 0.0}.validate("s"); }),
              ::testing::HasSubstr("s.top_p"));
  ImageOptions options;
  options.cfg_scale = -1.0;
  EXPECT_THAT(testing::error_of<ConfigError>([&] { options.validate(); }),
              ::testing::HasSubstr("--cfg: invalid guidance scale"));
  options.cfg_scale = 3.0;
  options.cfg_plausibility = 1.0;
  EXPECT_THAT(testing::error_of<ConfigError>([&] { options.validate(); }),
              ::testing::HasSubstr("--cfg-plausibility"));
}

TEST(InferCfg, HalvesAndInterleavedCombineTheSameRows) {
  const at::Tensor cond = at::randn({3, 10}), uncond = at::randn({3, 10});
  const at::Tensor expected = uncond + 2.5 * (cond - uncond);
  const at::Tensor halves = at::cat({cond, uncond});
  const at::Tensor interleaved = at::stack({cond, uncond}, 1).flatten(0, 1);
  EXPECT_TRUE(at::allclose(combine_cfg(halves, 2.5, CfgLayout::halves), expected));
  EXPECT_TRUE(at::allclose(combine_cfg(interleaved, 2.5, CfgLayout::interleaved), expected));
  EXPECT_TRUE(at::allclose(combine_cfg(halves, 0.0, CfgLayout::halves), uncond));
}

// Code 2 is all but ruled out by the conditional model, yet its unconditional logit is so much
// lower that plain guidance at scale 3 makes it the favourite; the plausibility cut keeps it
// out and leaves every plausible code's guided logit as it was.
TEST(InferCfg, PlausibilityKeepsGuidanceToCodesTheConditionalModelAllows) {
  const at::Tensor cond = at::tensor({5.0f, 0.0f, -10.0f}).view({1, 3});
  const at::Tensor uncond = at::tensor({5.0f, 0.0f, -30.0f}).view({1, 3});
  const at::Tensor logits = at::cat({cond, uncond});
  const at::Tensor plain = combine_cfg(logits, 3.0, CfgLayout::halves);
  EXPECT_TRUE(at::allclose(plain, at::tensor({5.0f, 0.0f, 30.0f}).view({1, 3})));
  EXPECT_EQ(plain.argmax(1).item<int64_t>(), 2);
  const float inf = std::numeric_limits<float>::infinity();
  // p(code 1) / p(code 0) = e^-5 ~ 0.0067: kept at 1e-3, cut at 0.1.
  EXPECT_TRUE(at::equal(combine_cfg(logits, 3.0, CfgLayout::halves, 1e-3),
                        at::tensor({5.0f, 0.0f, -inf}).view({1, 3})));
  EXPECT_TRUE(at::equal(combine_cfg(logits, 3.0, CfgLayout::halves, 0.1),
                        at::tensor({5.0f, -inf, -inf}).view({1, 3})));
  const at::Tensor interleaved = at::stack({cond, uncond}, 1).flatten(0, 1);
  EXPECT_TRUE(at::equal(combine_cfg(interleaved, 3.0, CfgLayout::interleaved, 0.1),
                        at::tensor({5.0f, -inf, -inf}).view({1, 3})));
}

TEST(InferCfg, ScaleOneIsExactlyTheConditionalLogits) {
  const at::Tensor cond = at::randn({2, 7}) * 100, uncond = at::randn({2, 7}) * 1e-3;
  testing::expect_bitwise_equal(combine_cfg(at::cat({cond, uncond}), 1.0, CfgLayout::halves), cond);
  EXPECT_THROW(combine_cfg(at::randn({3, 7}), 3.0, CfgLayout::halves), ShapeError);
  EXPECT_EQ(parse_cfg_layout("interleaved"), CfgLayout::interleaved);
  EXPECT_THROW(parse_cfg_layout("zigzag"), ConfigError);
}

}  // namespace
}  // namespace vilau
