// The LLaMA backbone against HF transformers 4.36.2 on two tiny random models
// (tests/data/llama/llama_tiny.safetensors, from tests/reference/make_llama_fixtures.py).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "test_util.h"
#include "vilau/core/error.h"
#include "vilau/core/op_trace.h"
#include "vilau/io/safetensors.h"
#include "vilau/llm/llama.h"
#include "vilau/model/load_module.h"

namespace vilau {
namespace {

using ::testing::HasSubstr;

// fp32; HF runs eager attention, this port SDPA, so the sums differ in order only.
constexpr double kMaxRelError = 1e-5;
constexpr int64_t kPromptLength = 7;

// (a) multi-head attention; (b) GQA with linear RoPE scaling, as the fixture script.
LlmConfig tiny(const std::string& which) {
  LlmConfig c;
  c.vocab_size = 64;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = which == "a" ? 4 : 2;
  c.max_position_embeddings = 64;
  c.rope_scaling_factor = which == "a" ? 1.0 : 2.0;
  return c;
}

// max|a - b| / max|b| over the positions where `mask` [B, T] is 1.
double relative_error(const at::Tensor& actual, const at::Tensor& expected,
                      const at::Tensor& mask) {
  EXPECT_EQ(actual.sizes(), expected.sizes());
  const at::Tensor keep = mask.to(at::kBool);
  return vilau::testing::relative_error(actual.index({keep}), expected.index({keep}));
}

// Whether autograd will run a node whose name contains `name` to differentiate `output`.
bool graph_has_node(const at::Tensor& output, const std::string& name) {
  std::vector<torch::autograd::Node*> stack = {output.grad_fn().get()};
  std::set<torch::autograd::Node*> seen;
  while (!stack.empty()) {
    torch::autograd::Node* node = stack.back();
    stack.pop_back();
    if (node == nullptr || !seen.insert(node).second) continue;
    if (node->name().find(name) != std::string::npos) return true;
    for (const auto& edge : node->next_edges()) stack.push_back(edge.function.get());
  }
  return false;
}

class LlamaTiny : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() {
    file_ = new io::SafetensorsFile(
        io::SafetensorsFile::open(VILAU_TEST_DATA_DIR "/llama/llama_tiny.safetensors"));
  }
  static void TearDownTestSuite() {
    delete file_;
    file_ = nullptr;
  }

  void SetUp() override {
    load_module(*model_, lookup(), prefix());
    model_->eval();
  }

  std::string prefix() const { return GetParam() + "."; }
  static TensorLookup lookup() { return vilau::testing::lookup_in(*file_); }
  static at::Tensor get(const std::string& name) { return file_->tensor(name); }

  static io::SafetensorsFile* file_;
  LlamaForCausalLM model_{tiny(GetParam())};
};

io::SafetensorsFile* LlamaTiny::file_ = nullptr;

TEST_P(LlamaTiny, ParameterNamesAndShapesAreHfs) {
  EXPECT_EQ(vilau::testing::parameter_shapes(*model_),
            vilau::testing::stored_shapes(*file_, prefix()));
  EXPECT_EQ(model_->named_buffers().size(), 0u);
}

TEST_P(LlamaTiny, PositionIdsFollowHfForLeftPadding) {
  testing::expect_bitwise_equal(position_ids_from_mask(get("input.attention_mask")),
                                get("input.position_ids"));
}

TEST_P(LlamaTiny, LeftPaddedLogitsMatchReference) {
  torch::NoGradGuard no_grad;
  const at::Tensor mask = get("input.attention_mask");
  const at::Tensor logits = model_->forward(get("input.input_ids"), mask);
  const double error = relative_error(logits, get("output." + GetParam() + ".logits"), mask);
  RecordProperty("max_rel_error", c10::str(error));
  EXPECT_LE(error, kMaxRelError);
}

TEST_P(LlamaTiny, CachedDecodingMatchesFullForward) {
  torch::NoGradGuard no_grad;
  const at::Tensor ids = get("input.input_ids");
  const at::Tensor continuation = get("input.continuation");
  const int64_t batch = ids.size(0), steps = continuation.size(1);
  at::Tensor mask = get("input.attention_mask");
  const at::Tensor full_mask = at::cat({mask, at::ones_like(continuation)}, 1);
  const at::Tensor full = model_->forward(at::cat({ids, continuation}, 1), full_mask);
  const at::Tensor reference = get("output." + GetParam() + ".full_logits");
  EXPECT_LE(relative_error(full, reference, full_mask), kMaxRelError);

  KvCache cache(model_->config(), batch, kPromptLength + steps, at::kFloat, at::kCPU);
  std::vector<at::Tensor> outputs{model_->logits(
      model_->hidden_states(model_->embed(ids), position_ids_from_mask(mask), mask, &cache))};
  for (int64_t i = 0; i < steps; ++i) {
    // The mask keeps the prompt's left pads masked for every later step.
    mask = at::cat({mask, at::ones({batch, 1}, mask.options())}, 1);
    const at::Tensor token = continuation.slice(1, i, i + 1);
    const at::Tensor positions = position_ids_from_mask(mask).slice(1, -1);
    outputs.push_back(
        model_->logits(model_->hidden_states(model_->embed(token), positions, mask, &cache)));
  }
  EXPECT_EQ(cache.length(), kPromptLength + steps);
  const at::Tensor cached = at::cat(outputs, 1);
  const double error = relative_error(cached, full, full_mask);
  RecordProperty("max_rel_error", c10::str(error));
  EXPECT_LE(error, kMaxRelError);
  EXPECT_LE(relative_error(cached, reference, full_mask), kMaxRelError);
}

// The in-place decode step (device-side slot, positions and mask over the whole cache)
// against HF's full forward, and against the growing-cache path it replaces.
TEST_P(LlamaTiny, StaticDecodeStepsMatchTheReference) {
  torch::NoGradGuard no_grad;
  const at::Tensor ids = get("input.input_ids");
  const at::Tensor continuation = get("input.continuation");
  const int64_t batch = ids.size(0), steps = continuation.size(1);
  const at::Tensor mask = get("input.attention_mask");
  const at::Tensor full_mask = at::cat({mask, at::ones_like(continuation)}, 1);
  const at::Tensor reference = get("output." + GetParam() + ".full_logits");

  KvCache cache(model_->config(), batch, kPromptLength + steps + 3, at::kFloat, at::kCPU);
  std::vector<at::Tensor> outputs{model_->logits(
      model_->hidden_states(model_->embed(ids), position_ids_from_mask(mask), mask, &cache))};
  const at::Tensor first_key = cache.visible();
  for (int64_t i = 0; i < steps; ++i) {
    outputs.push_back(
        model_->logits(model_->decode(model_->embed(continuation.slice(1, i, i + 1)), cache)));
  }
  EXPECT_EQ(cache.length(), kPromptLength + steps);
  // The mask is written in place: the same buffer at every step.
  EXPECT_EQ(cache.visible().data_ptr(), first_key.data_ptr());
  const at::Tensor decoded = at::cat(outputs, 1);
  const double error = relative_error(decoded, reference, full_mask);
  RecordProperty("max_rel_error", c10::str(error));
  EXPECT_LE(error, kMaxRelError);
  // A step that forgot the left pads (every cached key visible) would not match.
  EXPECT_TRUE(cache.visible().logical_not().any().item<bool>());
}

TEST_P(LlamaTiny, DecodeRefusesAFullCacheAndWrongShapes) {
  torch::NoGradGuard no_grad;
  const at::Tensor ids = get("input.input_ids");
  const at::Tensor mask = get("input.attention_mask");
  KvCache cache(model_->config(), ids.size(0), kPromptLength, at::kFloat, at::kCPU);
  model_->hidden_states(model_->embed(ids), position_ids_from_mask(mask), mask, &cache);
  const at::Tensor token = model_->embed(ids.slice(1, 0, 1));
  EXPECT_THAT(testing::error_of<ShapeError>([&] { model_->decode(token, cache); }),
              HasSubstr("at most " + std::to_string(kPromptLength)));
  EXPECT_THAT(testing::error_of<ShapeError>([&] { model_->decode(model_->embed(ids), cache); }),
              HasSubstr("inputs_embeds"));
}

// An unpadded batch takes SDPA's is_causal without a mask (the flash-attention form) and
// gives what the materialised causal mask gives.
TEST_P(LlamaTiny, UnpaddedBatchesRunCausalAttentionWithoutAMask) {
  torch::NoGradGuard no_grad;
  const at::Tensor ids = get("input.input_ids");
  const at::Tensor ones = at::ones_like(ids);
  const at::Tensor embeds = model_->embed(ids), positions = position_ids_from_mask(ones);
  const at::Tensor masked = model_->hidden_states(embeds, positions, ones);
  OpTrace trace;
  const at::Tensor causal = model_->hidden_states(embeds, positions, ones, nullptr, true);
  trace.stop();
  int64_t attention = 0;
  for (const OpTrace::Call& call : trace.calls()) {
    if (call.name != "aten::scaled_dot_product_attention") continue;
    ++attention;
    // query, key, value, then the mask: None, and is_causal.
    ASSERT_GE(call.inputs.size(), 6u);
    EXPECT_EQ(call.inputs[3], "None");
    EXPECT_EQ(call.inputs[5], "True");
  }
  EXPECT_EQ(attention, model_->config().num_layers);
  EXPECT_LE(testing::relative_error(causal, masked), kMaxRelError);
}

TEST_P(LlamaTiny, EveryParameterGetsAFiniteNonZeroGradient) {
  model_->train();
  const at::Tensor mask = get("input.attention_mask");
  const at::Tensor logits = model_->forward(get("input.input_ids"), mask);
  const at::Tensor targets =
      get("input.continuation").slice(1, 0, kPromptLength).masked_fill(mask.eq(0), -100);
  const at::Tensor loss =
      torch::nn::functional::cross_entropy(logits.flatten(0, 1), targets.flatten());
  loss.backward();
  for (const auto& p : model_->named_parameters()) {
    const at::Tensor grad = p.value().grad();
    ASSERT_TRUE(grad.defined()) << p.key();
    EXPECT_TRUE(grad.isfinite().all().item<bool>()) << p.key();
    EXPECT_GT(grad.abs().max().item<double>(), 0.0) << p.key();
  }
}

TEST_P(LlamaTiny, ActivationCheckpointingGivesTheSameLossAndGradients) {
  model_->train();
  const at::Tensor mask = get("input.attention_mask");
  const at::Tensor targets =
      get("input.continuation").slice(1, 0, kPromptLength).masked_fill(mask.eq(0), -100);
  std::map<std::string, at::Tensor> grads[2];
  double losses[2];
  for (int checkpointing = 0; checkpointing < 2; ++checkpointing) {
    model_->zero_grad();
    model_->set_activation_checkpointing(checkpointing == 1);
    const at::Tensor logits = model_->forward(get("input.input_ids"), mask);
    const at::Tensor loss =
        torch::nn::functional::cross_entropy(logits.flatten(0, 1), targets.flatten());
    EXPECT_EQ(graph_has_node(loss, "Recompute"), checkpointing == 1);
    loss.backward();
    losses[checkpointing] = loss.item<double>();
    for (const auto& p : model_->named_parameters()) {
      grads[checkpointing][p.key()] = p.value().grad().clone();
    }
  }
  EXPECT_EQ(losses[0], losses[1]);
  for (const auto& [name, grad] : grads[0]) {
    EXPECT_LE(vilau::testing::relative_error(grads[1].at(name), grad), 1e-6) << name;
  }
}

TEST_P(LlamaTiny, CacheOverflowIsAShapeError) {
  torch::NoGradGuard no_grad;
  KvCache cache(model_->config(), 2, 4, at::kFloat, at::kCPU);
  const at::Tensor mask = get("input.attention_mask");
  const std::string message = testing::error_of<ShapeError>([&] {
    model_->hidden_states(model_->embed(get("input.input_ids")), position_ids_from_mask(mask), mask,
                          &cache);
  });
  EXPECT_THAT(message, HasSubstr("at most 4"));
}

INSTANTIATE_TEST_SUITE_P(Llama, LlamaTiny, ::testing::Values("a", "b"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace vilau
