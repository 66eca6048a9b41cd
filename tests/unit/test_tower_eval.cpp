// Tower metrics (SSIM against scikit-image, reconstruction, zero-shot classification) and the
// MJHQ-30K helpers (docs/evaluation.md).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "test_util.h"
#include "vilau/config.h"
#include "vilau/core/error.h"
#include "vilau/eval/image_metrics.h"
#include "vilau/eval/mjhq.h"
#include "vilau/eval/shape_checker.h"
#include "vilau/eval/tower_eval.h"
#include "vilau/io/image.h"
#include "vilau/io/safetensors.h"
#include "vilau/model/config.h"
#include "vilau/tokenizer/tokenizer.h"
#include "vilau/vision/preprocess.h"

namespace vilau::eval {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using vilau::testing::error_of;
using vilau::testing::TempDirTest;

// scikit-image 0.26 structural_similarity, tests/reference/make_metric_fixtures.py; both sides
// compute in float64, so only summation order differs.
TEST(Ssim, MatchesScikitImage) {
  const auto file = io::SafetensorsFile::open(VILAU_TEST_DATA_DIR "/metrics/ssim.safetensors");
  const at::Tensor base = file.tensor("input.base");
  for (const char* name : {"noisy", "shifted", "random"}) {
    const double expected = file.tensor(std::string("output.ssim.") + name).item<double>();
    const double actual = ssim(base, file.tensor(std::string("input.") + name));
    EXPECT_NEAR(actual, expected, 1e-9 * std::max(1.0, std::abs(expected))) << name;
  }
  EXPECT_DOUBLE_EQ(ssim(base, base), 1.0);
  // A batch is the mean of its pictures.
  const at::Tensor noisy = file.tensor("input.noisy"), shifted = file.tensor("input.shifted");
  EXPECT_NEAR(ssim(torch::stack({base, base}), torch::stack({noisy, shifted})),
              (ssim(base, noisy) + ssim(base, shifted)) / 2, 1e-12);
}

TEST(Ssim, RejectsMismatchedOrTinyPictures) {
  const at::Tensor a = torch::zeros({16, 16, 3}, torch::kUInt8);
  EXPECT_THAT(error_of<ShapeError>([&] {
                ssim(a, torch::zeros({16, 17, 3}, torch::kUInt8));
              }),
              HasSubstr("of one shape"));
  EXPECT_THAT(error_of<ShapeError>([&] { ssim(a, a.to(torch::kFloat)); }), HasSubstr("uint8"));
  const at::Tensor small = torch::zeros({10, 16, 3}, torch::kUInt8);
  EXPECT_THAT(error_of<ShapeError>([&] { ssim(small, small); }), HasSubstr("11 or more"));
}

class TowerEvalTest : public TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    torch::manual_seed(0);
    config_ = *load_run_config(VILAU_SOURCE_DIR "/configs/presets/tiny.yaml").model;
    tower_ = VisionTower(config_.vision_tower);
    tower_->eval();
    for (int i = 0; i < 5; ++i) {
      const at::Tensor rgb = torch::randint(0, 256, {20 + i, 27, 3}, torch::kUInt8);
      images_.push_back(path("p" + std::to_string(i) + ".png"));
      io::write_image(images_.back(), rgb);
    }
  }
  ModelConfig config_;
  VisionTower tower_{nullptr};
  std::vector<std::string> images_;
};

// Per-picture PSNR and SSIM against what the tower saw, whatever the batching.
TEST_F(TowerEvalTest, ReconstructionAveragesPerPictureMetrics) {
  const ReconstructionResult r = evaluate_reconstruction(*tower_, images_, 2, path("out"));
  ASSERT_EQ(r.count, 5);
  double psnr_sum = 0, ssim_sum = 0;
  for (size_t i = 0; i < images_.size(); ++i) {
    char name[16];
    std::snprintf(name, sizeof(name), "%06zu.png", i);
    const at::Tensor input = io::read_image(path("out/inputs/") + name);
    const at::Tensor output = io::read_image(path("out/reconstructions/") + name);
    EXPECT_TRUE(input.equal(
        postprocess_image(preprocess_image(io::read_image(images_[i]), 32).unsqueeze(0))[0]));
    psnr_sum += psnr(output, input);
    ssim_sum += ssim(output, input);
  }
  EXPECT_NEAR(r.psnr_db, psnr_sum / 5, 1e-9);
  EXPECT_NEAR(r.ssim, ssim_sum / 5, 1e-9);
  const ReconstructionResult again = evaluate_reconstruction(*tower_, images_, 5);
  EXPECT_NEAR(again.psnr_db, r.psnr_db, 1e-4);
  EXPECT_NEAR(again.ssim, r.ssim, 1e-4);
}

TEST_F(TowerEvalTest, ZeroShotRanksClassPromptsByCosineSimilarity) {
  const Tokenizer tokenizer = Tokenizer::load(VILAU_TEST_DATA_DIR "/tokenizer");
  const std::vector<std::string> classes = {"dog", "cat", "red car", "tree", "blue sky", "boat"};
  std::vector<LabelledImage> labelled;
  for (size_t i = 0; i < images_.size(); ++i) {
    labelled.push_back({images_[i], classes[i % 3]});
  }
  const ZeroShotResult r =
      zero_shot_classify(*tower_, tokenizer, labelled, classes, "a photo of a {}.", 2);
  // The same ranking computed directly from the two towers.
  torch::NoGradGuard no_grad;
  std::vector<std::string> prompts;
  for (const auto& c : classes) prompts.push_back("a photo of a " + c + ".");
  const at::Tensor text =
      tower_->text->forward(siglip_text_ids(tokenizer, prompts, config_.vision_tower.text)).pooled;
  double top1 = 0, top5 = 0;
  for (size_t i = 0; i < images_.size(); ++i) {
    const at::Tensor image =
        tower_->vision->forward(preprocess_image(io::read_image(images_[i]), 32).unsqueeze(0))
            .pooled;
    const at::Tensor cosine = torch::cosine_similarity(image, text, 1);
    const at::Tensor order = cosine.argsort(0, true);
    const int64_t label = static_cast<int64_t>(i % 3);
    top1 += order[0].item<int64_t>() == label;
    top5 += order.slice(0, 0, 5).eq(label).any().item<bool>();
  }
  EXPECT_EQ(r.count, 5);
  EXPECT_DOUBLE_EQ(r.top1, top1 / 5);
  EXPECT_DOUBLE_EQ(r.top5, top5 / 5);
  EXPECT_EQ(r.per_class_top1.size(), 3u);
  EXPECT_THAT(error_of<ConfigError>([&] {
                zero_shot_classify(*tower_, tokenizer, {{images_[0], "horse"}}, classes, "{}", 1);
              }),
              HasSubstr("'horse'"));
  EXPECT_THAT(error_of<ConfigError>(
                  [&] { zero_shot_classify(*tower_, tokenizer, labelled, classes, "no slot", 1); }),
              HasSubstr("--template"));
}

TEST_F(TowerEvalTest, LabelledImagesResolveRelativePaths) {
  std::ofstream(path("labels.jsonl")) << R"({"image": "p0.png", "label": "dog"})"
                                      << "\n"
                                      << R"({"image": "/abs/x.png", "label": "cat"})"
                                      << "\n";
  const auto rows = read_labelled_images(path("labels.jsonl"));
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].image, path("p0.png"));
  EXPECT_EQ(rows[1].image, "/abs/x.png");
  std::ofstream(path("bad.jsonl")) << R"({"image": "p0.png"})"
                                   << "\n";
  EXPECT_THAT(error_of<FormatError>([&] { read_labelled_images(path("bad.jsonl")); }),
              HasSubstr("bad.jsonl:1"));
}

using MjhqTest = TempDirTest;

TEST_F(MjhqTest, MetaIsSortedByIdAndValidated) {
  std::ofstream(path("meta.json"))
      << R"({"b2": {"category": "food", "prompt": "soup"}, "a1": {"category": "art", "prompt": "x"}})";
  const auto prompts = read_mjhq_meta(path("meta.json"));
  ASSERT_EQ(prompts.size(), 2u);
  EXPECT_EQ(prompts[0].id, "a1");
  EXPECT_EQ(prompts[1].category, "food");
  EXPECT_EQ(prompts[1].prompt, "soup");
  std::ofstream(path("bad.json")) << R"({"a1": {"category": "art"}})";
  const std::string message = error_of<FormatError>([&] { read_mjhq_meta(path("bad.json")); });
  EXPECT_THAT(message, HasSubstr("bad.json"));
  EXPECT_THAT(message, HasSubstr("'a1'"));
  EXPECT_THAT(message, HasSubstr("prompt"));
  std::ofstream(path("escape.json")) << R"({"../x": {"category": "art", "prompt": "p"}})";
  EXPECT_THAT(error_of<FormatError>([&] { read_mjhq_meta(path("escape.json")); }),
              HasSubstr("plain file name"));
}

TEST_F(MjhqTest, RealPicturesByCategoryOrFlat) {
  fs::create_directories(path("real/art"));
  std::ofstream(path("real/art/a1.jpg")) << "x";
  std::ofstream(path("real/b2.jpg")) << "x";
  EXPECT_EQ(mjhq_real_image(path("real"), {"a1", "art", ""}), path("real/art/a1.jpg"));
  EXPECT_EQ(mjhq_real_image(path("real"), {"b2", "food", ""}), path("real/b2.jpg"));
  EXPECT_THAT(error_of<IoError>([&] {
                mjhq_real_image(path("real"), {"c3", "food", ""});
              }),
              HasSubstr("food/c3.jpg"));
}

TEST(MjhqFid, PerCategoryStatsUseOnlyTheirRows) {
  torch::manual_seed(1);
  const at::Tensor real = torch::randn({7, 4}, torch::kDouble);
  const at::Tensor fake = torch::randn({7, 4}, torch::kDouble) + 0.5;
  const std::vector<std::string> categories = {"a", "b", "a", "b", "a", "b", "c"};
  const CategoryFid fid = mjhq_fid(mjhq_stats(real, categories), mjhq_stats(fake, categories));
  EXPECT_NEAR(fid.overall, frechet_distance(compute_fid_stats(real), compute_fid_stats(fake)),
              1e-12);
  const at::Tensor rows_a = torch::tensor({0, 2, 4});
  EXPECT_NEAR(*fid.per_category.at("a"),
              frechet_distance(compute_fid_stats(real.index_select(0, rows_a)),
                               compute_fid_stats(fake.index_select(0, rows_a))),
              1e-12);
  EXPECT_FALSE(fid.per_category.at("c").has_value());  // one picture: no covariance
  EXPECT_EQ(fid.counts.at("all"), 7);
  EXPECT_EQ(fid.counts.at("b"), 3);
  EXPECT_THAT(error_of<FormatError>([&] {
                mjhq_stats(real, {"all", "a", "a", "a", "a", "a", "a"});
              }),
              HasSubstr("'all'"));
}

}  // namespace
}  // namespace vilau::eval
