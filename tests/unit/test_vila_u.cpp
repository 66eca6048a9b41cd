// The unified model: how a multimodal batch expands, which positions the text and visual
// losses count, gradients, and loading an official folder.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <array>
#include <string>
#include <vector>

#include "test_util.h"
#include "vilau/config.h"
#include "vilau/core/error.h"
#include "vilau/model/init.h"
#include "vilau/model/official_checkpoint.h"
#include "vilau/model/vila_u.h"
#include "vilau/tokenizer/tokenizer.h"

namespace vilau {
namespace {

constexpr int64_t kVocab = 516;  // the tiny preset: 512 text pieces and the four added tokens
constexpr int64_t kImStart = kVocab - 4, kImEnd = kVocab - 3, kViStart = kVocab - 2,
                  kViEnd = kVocab - 1;
constexpr int64_t kImage = kImageTokenIndex, kNo = kIgnoreIndex;

ModelConfig tiny_config() {
  return *load_run_config(VILAU_SOURCE_DIR "/configs/presets/tiny.yaml").model;
}

at::Tensor row_tensor(std::vector<std::vector<int64_t>> rows, int64_t pad) {
  size_t length = 0;
  for (const auto& r : rows) length = std::max(length, r.size());
  at::Tensor out =
      at::full({static_cast<int64_t>(rows.size()), static_cast<int64_t>(length)}, pad, at::kLong);
  for (size_t b = 0; b < rows.size(); ++b) {
    out[static_cast<int64_t>(b)]
        .slice(0, 0, static_cast<int64_t>(rows[b].size()))
        .copy_(at::tensor(rows[b], at::kLong));
  }
  return out;
}

TEST(VisualSpans, PairMarkersAndSplitVideosIntoFrames) {
  at::Tensor labels = at::full({2, 16}, kNo, at::kLong);
  labels[0][2] = kImStart;
  labels[0].slice(0, 3, 7).fill_(kVocab + 5);
  labels[0][7] = kImEnd;
  labels[1][1] = kViStart;
  labels[1].slice(0, 2, 10).fill_(kVocab + 1);
  labels[1][10] = kViEnd;
  const std::vector<VisualSpan> spans = visual_spans(labels, kVocab, 4);
  ASSERT_EQ(spans.size(), 3u);
  EXPECT_EQ(std::vector<int64_t>({spans[0].row, spans[0].start, spans[0].length}),
            std::vector<int64_t>({0, 3, 4}));
  EXPECT_EQ(std::vector<int64_t>({spans[1].row, spans[1].start, spans[1].length}),
            std::vector<int64_t>({1, 2, 4}));
  EXPECT_EQ(std::vector<int64_t>({spans[2].row, spans[2].start, spans[2].length}),
            std::vector<int64_t>({1, 6, 4}));

  labels[0][7] = kNo;
  EXPECT_THAT(testing::error_of<ShapeError>([&] { visual_spans(labels, kVocab, 4); }),
              ::testing::HasSubstr("row 0 labels"));
}

class VilaUTiny : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::manual_seed(0);
    model_ = VilaU(tiny_config());
    codes_ = at::randint(0, 64, {2, 4, 4, 2}, at::kLong);
  }

  // Row 0: a text-to-image pair, the image a generation target. Row 1: a question about an
  // image with a two-token answer, the image only context. Right-padded with 0.
  MultimodalBatch batch() const {
    MultimodalBatch b;
    b.input_ids = row_tensor(
        {{1, 10, 11, kImStart, kImage, kImEnd, 2}, {1, 20, kImStart, kImage, kImEnd, 21, 22, 2}},
        0);
    b.labels = row_tensor(
        {{kNo, kNo, kNo, kImStart, kImage, kImEnd, 2}, {kNo, kNo, kNo, kNo, kNo, kNo, 22, 2}}, kNo);
    b.attention_mask = row_tensor({{1, 1, 1, 1, 1, 1, 1}, {1, 1, 1, 1, 1, 1, 1, 1}}, 0);
    b.image_codes = codes_;
    return b;
  }

  VilaU model_{nullptr};
  at::Tensor codes_;
};

TEST_F(VilaUTiny, ExpandPutsCodeEmbeddingsAndLabelsInPlace) {
  torch::NoGradGuard no_grad;
  const ExpandedInputs in = model_->expand(batch());
  ASSERT_EQ(in.inputs_embeds.sizes(), at::IntArrayRef({2, 23, 64}));
  ASSERT_EQ(in.labels.sizes(), at::IntArrayRef({2, 23, 2}));
  EXPECT_EQ(in.attention_mask[0].sum().item<int64_t>(), 22);
  EXPECT_EQ(in.attention_mask[1].sum().item<int64_t>(), 23);

  const at::Tensor images = model_->embed_codes(codes_).flatten(1, 2);  // [2, 16, 64]
  testing::expect_bitwise_equal(in.inputs_embeds[0].slice(0, 4, 20), images[0]);
  testing::expect_bitwise_equal(in.inputs_embeds[1].slice(0, 3, 19), images[1]);
  const at::Tensor text = model_->llm->embed(at::tensor(std::vector<int64_t>{1, 20, kImStart}));
  testing::expect_bitwise_equal(in.inputs_embeds[1].slice(0, 0, 3), text);
  EXPECT_EQ(in.inputs_embeds[0][22].abs().sum().item<float>(), 0.0f);  // padding

  // Row 0's image is a target: its labels are its codes offset by the text vocabulary.
  testing::expect_bitwise_equal(in.labels[0].slice(0, 4, 20), codes_[0].flatten(0, 1) + kVocab);
  EXPECT_TRUE(in.labels[1].slice(0, 3, 19).eq(kNo).all().item<bool>());
  EXPECT_EQ(in.labels[0][3][1].item<int64_t>(), kImStart);  // text labels repeat over D
  EXPECT_EQ(in.labels[0][20][0].item<int64_t>(), kImEnd);
  EXPECT_EQ(in.position_ids[1][22].item<int64_t>(), 22);
}

TEST_F(VilaUTiny, LossCountsExactlyTheTextAndVisualTargets) {
  model_->eval();
  const MultimodalBatch b = batch();
  const VilaULoss loss = model_->loss(b, LossWeights{0.5, 2.0});
  EXPECT_EQ(loss.text_targets, 5);
  EXPECT_EQ(loss.visual_targets, 16);

  // The same losses from hand-listed positions: (row, predicting position, target).
  const ExpandedInputs in = model_->expand(b);
  const at::Tensor hidden =
      model_->llm->hidden_states(in.inputs_embeds, in.position_ids, in.attention_mask);
  const std::vector<std::array<int64_t, 3>> text = {
      {0, 2, kImStart}, {0, 19, kImEnd}, {0, 20, 2}, {1, 20, 22}, {1, 21, 2}};
  std::vector<at::Tensor> states;
  std::vector<int64_t> targets;
  for (const auto& [row, pos, target] : text) {
    states.push_back(hidden[row][pos]);
    targets.push_back(target);
  }
  const at::Tensor text_loss = torch::nn::functional::cross_entropy(
      model_->llm->logits(at::stack(states)), at::tensor(targets, at::kLong));
  EXPECT_LE(testing::relative_error(loss.text_loss, text_loss), 1e-6);

  // Visual: the hidden state at <im_start> and at each image position but the last
  // predicts the codes of the next position.
  const at::Tensor codes = codes_[0].flatten(0, 1);  // [16, 2]
  const at::Tensor prefix = model_->code_prefix_sums(codes).slice(-2, 0, 1);
  const at::Tensor logits = model_->depth_transformer(hidden[0].slice(0, 3, 19), prefix);
  const at::Tensor visual_loss =
      torch::nn::functional::cross_entropy(logits.flatten(0, 1), codes.flatten());
  EXPECT_LE(testing::relative_error(loss.visual_loss, visual_loss), 1e-6);
  EXPECT_LE(testing::relative_error(loss.loss, 0.5 * text_loss + 2.0 * visual_loss), 1e-6);
}

// Two samples packed into one row must see exactly what they see in rows of their own.
TEST_F(VilaUTiny, PackedSamplesMatchSeparateRows) {
  model_->eval();
  torch::NoGradGuard no_grad;
  const MultimodalBatch separate = batch();
  MultimodalBatch packed;
  std::vector<int64_t> ids, labels, segments;
  for (int64_t row = 0; row < 2; ++row) {
    const int64_t n = separate.attention_mask[row].sum().item<int64_t>();
    for (int64_t t = 0; t < n; ++t) {
      ids.push_back(separate.input_ids[row][t].item<int64_t>());
      labels.push_back(separate.labels[row][t].item<int64_t>());
      segments.push_back(row + 1);
    }
  }
  packed.input_ids = row_tensor({ids}, 0);
  packed.labels = row_tensor({labels}, kNo);
  packed.segment_ids = row_tensor({segments}, 0);
  packed.attention_mask = packed.segment_ids.ne(0).to(at::kLong);
  packed.image_codes = codes_;

  const ExpandedInputs a = model_->expand(separate), p = model_->expand(packed);
  EXPECT_EQ(p.position_ids[0][22].item<int64_t>(), 0);  // the second sample starts over
  const at::Tensor ha =
      model_->llm->hidden_states(a.inputs_embeds, a.position_ids, a.attention_mask);
  const at::Tensor hp =
      model_->llm->hidden_states(p.inputs_embeds, p.position_ids, p.attention_mask);
  EXPECT_LE(testing::relative_error(hp[0].slice(0, 0, 22), ha[0].slice(0, 0, 22)), 1e-5);
  EXPECT_LE(testing::relative_error(hp[0].slice(0, 22, 45), ha[1]), 1e-5);
  const VilaULoss la = model_->loss(a), lp = model_->loss(p);
  EXPECT_EQ(lp.text_targets, la.text_targets);
  EXPECT_EQ(lp.visual_targets, la.visual_targets);
  EXPECT_LE(testing::relative_error(lp.text_loss, la.text_loss), 1e-5);
  EXPECT_LE(testing::relative_error(lp.visual_loss, la.visual_loss), 1e-5);
}

TEST_F(VilaUTiny, VideoTargetsAreEveryFramePosition) {
  model_->eval();
  MultimodalBatch b;
  std::vector<int64_t> ids = {1, 10, kViStart};
  ids.insert(ids.end(), 8, kImage);
  ids.insert(ids.end(), {kViEnd, 2});
  std::vector<int64_t> labels(ids);
  std::fill(labels.begin(), labels.begin() + 2, kNo);
  b.input_ids = row_tensor({ids}, 0);
  b.labels = row_tensor({labels}, kNo);
  b.attention_mask = at::ones_like(b.input_ids);
  b.image_codes = at::randint(0, 64, {8, 4, 4, 2}, at::kLong);
  const ExpandedInputs in = model_->expand(b);
  EXPECT_EQ(visual_spans(in.labels.select(2, 0), kVocab, 16).size(), 8u);
  const VilaULoss loss = model_->loss(in);
  EXPECT_EQ(loss.visual_targets, 128);
  EXPECT_EQ(loss.text_targets, 3);  // <vi_start>, <vi_end>, </s>
}

TEST_F(VilaUTiny, EveryTrainableParameterGetsAFiniteNonZeroGradient) {
  model_->train();
  EXPECT_FALSE(model_->vision_tower->is_training());
  model_->loss(batch()).loss.backward();
  for (const auto& p : model_->named_parameters()) {
    const at::Tensor grad = p.value().grad();
    if (p.key().rfind("vision_tower.", 0) == 0) {
      EXPECT_FALSE(p.value().requires_grad()) << p.key();
      EXPECT_FALSE(grad.defined()) << p.key();
      continue;
    }
    ASSERT_TRUE(grad.defined()) << p.key();
    EXPECT_TRUE(grad.isfinite().all().item<bool>()) << p.key();
    EXPECT_GT(grad.abs().max().item<double>(), 0.0) << p.key();
  }
}

TEST_F(VilaUTiny, BadBatchesAreShapeErrors) {
  MultimodalBatch b = batch();
  b.image_codes = codes_.slice(0, 0, 1);
  EXPECT_THAT(testing::error_of<ShapeError>([&] { model_->expand(b); }),
              ::testing::HasSubstr("one per placeholder"));
  b = batch();
  b.labels = at::Tensor();
  EXPECT_THAT(testing::error_of<ShapeError>([&] { model_->loss(b); }),
              ::testing::HasSubstr("labels"));
  b = batch();
  b.attention_mask = b.attention_mask.slice(1, 0, 3);
  EXPECT_THAT(testing::error_of<ShapeError>([&] { model_->expand(b); }),
              ::testing::HasSubstr("attention_mask"));
  b = batch();
  b.input_ids = at::cat({b.input_ids, at::full({2, 600}, 5, at::kLong)}, 1);
  b.attention_mask = at::ones_like(b.input_ids);
  b.labels = at::Tensor();
  EXPECT_THAT(testing::error_of<ShapeError>([&] { model_->expand(b); }),
              ::testing::HasSubstr("at most 512 positions"));
}

class VilaUFolder : public testing::TempDirTest {};

TEST_F(VilaUFolder, LoadsAnOfficialFolderBitExact) {
  const ModelConfig config = tiny_config();
  const auto weights = init_weights(config, 7);
  export_official(path("model"), config, weights);
  VilaU model = load_vila_u(path("model"), at::kFloat, at::kCPU);
  EXPECT_FALSE(model->is_training());
  const auto loaded = model->official_state_dict();
  ASSERT_EQ(loaded.size(), weights.size());
  for (const auto& [name, t] : weights) {
    ASSERT_TRUE(loaded.count(name)) << name;
    testing::expect_bitwise_equal(loaded.at(name).to(at::kBFloat16), t);
  }
  VilaU bf16 = load_vila_u(path("model"), at::kBFloat16, at::kCPU);
  EXPECT_EQ(bf16->llm->lm_head->weight.scalar_type(), at::kBFloat16);
}

}  // namespace
}  // namespace vilau
