// Text-to-image generation on the tiny random model: determinism, CFG 1 against a
// conditional-only run, both caches against recomputation, shapes, and refused inputs.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <limits>

#include "test_util.h"
#include "vilau/config.h"
#include "vilau/core/error.h"
#include "vilau/infer/image_generation.h"
#include "vilau/infer/outputs.h"
#include "vilau/infer/prompt_file.h"
#include "vilau/io/image.h"

namespace vilau {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kImStart = 512, kViStart = 514;  // the tiny preset's added tokens

class InferGeneration : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::manual_seed(0);
    model_ = VilaU(*load_run_config(VILAU_SOURCE_DIR "/configs/presets/tiny.yaml").model);
    model_->eval();
  }

  // Two different prompts, the longer first, so that padding shows up in the CFG batch.
  at::Tensor codes(const ImageOptions& options, uint64_t seed, int64_t start = kImStart) {
    ImageGenerator generator(model_);
    at::Generator rng = make_generator(at::kCPU, seed);
    return generator.generate_codes({{1, 40, 41, 42, 43, 44, start}, {1, 50, 51, start}},
                                    {1, 60, start}, options, rng);
  }

  VilaU model_{nullptr};
};

TEST_F(InferGeneration, SameSeedSameCodesAndPngBytes) {
  const ImageOptions options;
  const at::Tensor a = codes(options, 7), b = codes(options, 7);
  EXPECT_EQ(a.sizes(), at::IntArrayRef({2, 4, 4, 2}));
  EXPECT_TRUE(at::equal(a, b));
  EXPECT_FALSE(at::equal(a, codes(options, 8)));

  ImageGenerator generator(model_);
  const fs::path dir = fs::temp_directory_path() / "vilau_infer_png";
  fs::create_directories(dir);
  io::write_image((dir / "a.png").string(), generator.decode(a)[1]);
  io::write_image((dir / "b.png").string(), generator.decode(b)[1]);
  const auto bytes = [](const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  EXPECT_EQ(bytes(dir / "a.png"), bytes(dir / "b.png"));
  EXPECT_EQ(io::read_image((dir / "a.png").string()).sizes(), at::IntArrayRef({32, 32, 3}));
  fs::remove_all(dir);
}

TEST_F(InferGeneration, CfgOneGivesTheConditionalOnlyCodes) {
  ImageOptions cond_only;
  cond_only.unconditional = false;
  const at::Tensor expected = codes(cond_only, 3);
  for (const CfgLayout layout : {CfgLayout::halves, CfgLayout::interleaved}) {
    ImageOptions options;
    options.cfg_scale = 1.0;
    options.layout = layout;
    EXPECT_TRUE(at::equal(codes(options, 3), expected));
  }
  ImageOptions guided;
  EXPECT_FALSE(at::equal(codes(guided, 3), expected));
}

TEST_F(InferGeneration, LayoutsAgree) {
  ImageOptions halves, interleaved;
  interleaved.layout = CfgLayout::interleaved;
  EXPECT_TRUE(at::equal(codes(halves, 5), codes(interleaved, 5)));
}

TEST_F(InferGeneration, CachesEqualRecomputation) {
  const ImageOptions cached;
  const at::Tensor expected = codes(cached, 11);
  ImageOptions no_llm_cache, no_depth_cache;
  no_llm_cache.llm_cache = false;
  no_depth_cache.depth_cache = false;
  EXPECT_TRUE(at::equal(codes(no_llm_cache, 11), expected));
  EXPECT_TRUE(at::equal(codes(no_depth_cache, 11), expected));
}

TEST_F(InferGeneration, ImageStepsNeverRunLmHead) {
  const at::Tensor expected = codes({}, 4);
  {
    torch::NoGradGuard no_grad;
    model_->llm->lm_head->weight.fill_(std::numeric_limits<float>::quiet_NaN());
  }
  EXPECT_TRUE(at::equal(codes({}, 4), expected));
}

TEST_F(InferGeneration, VideosHaveFramesAndDecodeToImages) {
  ImageOptions options;
  options.frames = 3;
  options.profile = true;
  ImageGenerator generator(model_);
  at::Generator rng = make_generator(at::kCPU, 2);
  const at::Tensor c = generator.generate_codes({{1, 40, kViStart}, {1, 41, 42, kViStart}},
                                                {1, kViStart}, options, rng);
  EXPECT_EQ(c.sizes(), at::IntArrayRef({2, 3, 4, 4, 2}));
  EXPECT_GT(generator.times().depth, 0.0);
  EXPECT_GT(generator.times().llm, 0.0);
  // Prefill of 4 rows x 4 positions, then 3 frames x 16 positions less the last, 4 rows.
  EXPECT_EQ(generator.times().llm_tokens, 4 * 4 + (3 * 16 - 1) * 4);
  const at::Tensor pixels = generator.decode(c, 4);
  EXPECT_EQ(pixels.sizes(), at::IntArrayRef({2, 3, 32, 32, 3}));
  EXPECT_EQ(pixels.scalar_type(), at::kByte);
  // Batched decoding is the same as one image at a time.
  EXPECT_TRUE(at::equal(generator.decode(c[1][2].unsqueeze(0))[0], pixels[1][2]));
  EXPECT_EQ(image_grid(pixels[0], 3).sizes(), at::IntArrayRef({32, 96, 3}));
}

TEST_F(InferGeneration, RefusesPromptsLongerThanTheContext) {
  ImageGenerator generator(model_);
  at::Generator rng = make_generator(at::kCPU, 0);
  std::vector<int64_t> longest(512 - 16, 7);  // exactly room for the 16 image positions
  longest.back() = kImStart;
  EXPECT_NO_THROW(generator.generate_codes({longest}, {1, kImStart}, {}, rng));
  longest.insert(longest.begin(), 1);
  EXPECT_THAT(testing::error_of<ShapeError>([&] {
                generator.generate_codes({longest}, {1, kImStart}, {}, rng);
              }),
              ::testing::HasSubstr("prompt longer than the context"));
}

TEST(InferOutputs, GridPlacesImagesRowByRow) {
  const at::Tensor images = at::arange(5, at::kByte).view({5, 1, 1, 1}).expand({5, 2, 2, 3});
  const at::Tensor grid = image_grid(images, 2);
  EXPECT_EQ(grid.sizes(), at::IntArrayRef({6, 4, 3}));
  EXPECT_EQ(grid[2][2][0].item<int>(), 3);
  EXPECT_EQ(grid[4][2][0].item<int>(), 0);  // the empty sixth cell
}

TEST(InferOutputs, PromptFileAndShards) {
  const fs::path file = fs::temp_directory_path() / "vilau_prompts.jsonl";
  std::ofstream(file) << R"({"id": "a", "prompt": "x"})"
                      << "\n\n"
                      << R"({"id": 7, "prompt": "y"})"
                      << "\n";
  const std::vector<PromptEntry> entries = read_prompt_file(file.string());
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[1].id, "7");
  std::ofstream(file) << R"({"id": "a/b", "prompt": "x"})"
                      << "\n";
  EXPECT_THAT(testing::error_of<FormatError>([&] { read_prompt_file(file.string()); }),
              ::testing::HasSubstr("vilau_prompts.jsonl:1: id"));
  std::ofstream(file) << R"({"id": "a", "prompt": "x"})"
                      << "\n"
                      << R"({"id": "a", "prompt": "y"})";
  EXPECT_THAT(testing::error_of<FormatError>([&] { read_prompt_file(file.string()); }),
              ::testing::HasSubstr(":2: id"));
  fs::remove(file);
  EXPECT_EQ(shard_indices(7, {1, 3}), std::vector<int64_t>({1, 4}));
  EXPECT_EQ(shard_indices(2, {0, 1}), std::vector<int64_t>({0, 1}));
}

}  // namespace
}  // namespace vilau
