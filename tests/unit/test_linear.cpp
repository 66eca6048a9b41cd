// The decode-step forms of linear layers (core/linear): the same products as
// torch::nn::Linear in fewer dispatched operators, FusedLinear's shared weights, window().
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "test_util.h"
#include "vilau/core/error.h"
#include "vilau/core/linear.h"
#include "vilau/core/op_trace.h"

namespace vilau {
namespace {

using ::testing::HasSubstr;
using vilau::testing::error_of;

// 1024 x 1024 reaches kStreamedWeights: the CPU's (W x^T)^T path for 2..16 rows.
torch::nn::Linear layer(int64_t in, int64_t out, bool bias) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
}

TEST(Linear, EqualsTorchLinearOnEveryPath) {
  torch::manual_seed(0);
  torch::NoGradGuard no_grad;
  for (const int64_t width : {64, 1024}) {
    for (const bool bias : {true, false}) {
      torch::nn::Linear l = layer(width, width, bias);
      for (const int64_t rows : {1, 2, 16, 17}) {
        for (const bool three_d : {false, true}) {
          SCOPED_TRACE(std::to_string(width) + " wide, " + std::to_string(rows) + " rows" +
                       (bias ? ", bias" : "") + (three_d ? ", [B, 1, in]" : ""));
          const at::Tensor x = three_d ? at::randn({rows, 1, width}) : at::randn({rows, width});
          const at::Tensor expected = l->forward(x);
          const at::Tensor got = linear(*l, x);
          ASSERT_EQ(got.sizes(), expected.sizes());
          EXPECT_TRUE(got.is_contiguous());  // what SDPA's fused kernels and views need
          EXPECT_TRUE(at::allclose(got, expected, 1e-5, 1e-5));
        }
      }
    }
  }
}

TEST(Linear, DispatchesFewerOperatorsThanTorchLinear) {
  torch::NoGradGuard no_grad;
  torch::nn::Linear l = layer(64, 64, true);
  const at::Tensor x = at::randn({2, 1, 64});
  const auto count = [&](const std::function<void()>& f) {
    OpTrace trace;
    f();
    trace.stop();
    return trace.ops();
  };
  EXPECT_LT(count([&] { linear(*l, x); }), count([&] { l->forward(x); }));
}

TEST(Linear, KeepsAutogradWhenGradientsAreOn) {
  torch::nn::Linear l = layer(8, 4, true);
  const at::Tensor x = at::randn({3, 8}, at::requires_grad());
  linear(*l, x).sum().backward();
  ASSERT_TRUE(l->weight.grad().defined());
  EXPECT_TRUE(at::allclose(l->weight.grad(), x.sum(0).expand({4, 8})));
}

TEST(FusedLinear, OneProductEqualsTheLayersAndKeepsTheirParameters) {
  torch::manual_seed(1);
  torch::nn::Linear q = layer(32, 32, true), k = layer(32, 16, true), v = layer(32, 16, true);
  const at::Tensor qw = q->weight.clone(), kb = k->bias.clone();
  const at::Tensor x = at::randn({3, 1, 32});
  const at::Tensor expected = at::cat({q->forward(x), k->forward(x), v->forward(x)}, -1);
  FusedLinear fused({q.get(), k.get(), v.get()});
  ASSERT_TRUE(fused.intact());
  // The parameters keep their values and shapes, now rows of one tensor.
  EXPECT_TRUE(at::equal(q->weight, qw));
  EXPECT_TRUE(at::equal(k->bias, kb));
  EXPECT_EQ(k->weight.sizes(), (std::vector<int64_t>{16, 32}));
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(at::allclose(fused.forward(x), expected, 1e-5, 1e-5));
  // Loading in place (as load_module and load_state_dict do) changes what it computes.
  k->weight.copy_(at::randn({16, 32}));
  EXPECT_TRUE(fused.intact());
  const at::Tensor reloaded = at::cat({q->forward(x), k->forward(x), v->forward(x)}, -1);
  EXPECT_TRUE(at::allclose(fused.forward(x), reloaded, 1e-5, 1e-5));
  EXPECT_FALSE(at::allclose(reloaded, expected, 1e-3, 1e-3));
}

TEST(FusedLinear, ReplacedParametersEndTheSharing) {
  torch::nn::Linear a = layer(8, 8, false), b = layer(8, 8, false);
  FusedLinear fused({a.get(), b.get()});
  ASSERT_TRUE(fused.intact());
  a->to(at::kDouble);
  EXPECT_FALSE(fused.intact());
  FusedLinear again({a.get(), b.get()});
  ASSERT_TRUE(again.intact());
  b->weight.set_data(at::randn({8, 8}, at::kDouble));
  EXPECT_FALSE(again.intact());
  EXPECT_FALSE(FusedLinear().intact());
}

TEST(Window, EqualsNarrowInOneOperator) {
  const at::Tensor x = at::randn({2, 3, 5, 4});
  for (const int64_t dim : {0, 2, -1}) {
    const at::Tensor expected = x.narrow(dim, 1, 1);
    OpTrace trace;
    const at::Tensor got = window(x, dim, 1, 1);
    trace.stop();
    EXPECT_EQ(trace.ops(), 1);
    EXPECT_TRUE(at::equal(got, expected));
    EXPECT_EQ(got.data_ptr(), expected.data_ptr());
  }
  EXPECT_THAT(error_of<ShapeError>([&] { window(x, 2, 4, 2); }), HasSubstr("[4, 6)"));
  EXPECT_THAT(error_of<ShapeError>([&] { window(x, 4, 0, 1); }), HasSubstr("dimension 4"));
}

TEST(LayerNorm, EqualsTheModule) {
  torch::nn::LayerNorm ln(torch::nn::LayerNormOptions({16}));
  torch::NoGradGuard no_grad;
  ln->weight.uniform_();
  const at::Tensor x = at::randn({3, 16});
  EXPECT_TRUE(at::equal(layer_norm(*ln, x), ln->forward(x)));
}

}  // namespace
}  // namespace vilau
