// FID against pytorch-fid, clean-fid and scipy (tests/reference/make_fid_fixtures.py): the
// clean resize, the Inception port with seeded weights, statistics and the Fréchet distance.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "seeded_inception.h"
#include "test_util.h"
#include "vilau/core/error.h"
#include "vilau/eval/fid.h"
#include "vilau/eval/inception.h"
#include "vilau/io/image.h"
#include "vilau/io/safetensors.h"
#include "vilau/vision/preprocess.h"

namespace vilau {
namespace {

using testing::fill_seeded;

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::EndsWith;
using ::testing::HasSubstr;
using vilau::testing::error_of;
using vilau::testing::relative_error;

const io::SafetensorsFile& inception_fixture() {
  static const io::SafetensorsFile f =
      io::SafetensorsFile::open(VILAU_TEST_DATA_DIR "/fid/inception.safetensors");
  return f;
}

const io::SafetensorsFile& frechet_fixture() {
  static const io::SafetensorsFile f =
      io::SafetensorsFile::open(VILAU_TEST_DATA_DIR "/fid/frechet.safetensors");
  return f;
}

eval::FidStats fixture_stats(const std::string& name) {
  const auto& f = frechet_fixture();
  return {f.tensor("mu." + name), f.tensor("sigma." + name), f.tensor("features." + name).size(0)};
}

TEST(FidResize, FloatResizeMatchesPillowModeF) {
  const auto& f = inception_fixture();
  const at::Tensor image = f.tensor("input.image0").to(torch::kFloat);
  for (const auto& [w, h] : {std::pair<int64_t, int64_t>{23, 17}, {67, 45}}) {
    SCOPED_TRACE(std::to_string(w) + "x" + std::to_string(h));
    const at::Tensor expected =
        f.tensor("pil_float." + std::to_string(w) + "x" + std::to_string(h));
    const at::Tensor got = pil_bicubic_resize_float(image, w, h);
    ASSERT_EQ(got.sizes(), expected.sizes());
    // Pillow's arithmetic step by step: at most float32 rounding on values up to ~255.
    EXPECT_LE((got - expected).abs().max().item<double>(), 1e-4);
  }
  EXPECT_THROW(pil_bicubic_resize_float(image.to(torch::kDouble), 8, 8), ShapeError);
}

TEST(FidResize, CleanResizeMatchesCleanFid) {
  const auto& f = inception_fixture();
  for (int i = 0; i < 2; ++i) {
    SCOPED_TRACE(i);
    const std::string key = "clean.image" + std::to_string(i);
    const at::Tensor resized = eval::clean_fid_resize(f.tensor("input.image" + std::to_string(i)));
    ASSERT_EQ(resized.sizes().vec(), (std::vector<int64_t>{3, 299, 299}));
    EXPECT_EQ(resized.scalar_type(), torch::kFloat);
    const at::Tensor hwc = resized.permute({1, 2, 0});
    const at::Tensor strided = hwc.slice(0, 0, 299, 13).slice(1, 0, 299, 13);
    EXPECT_LE((strided - f.tensor(key + ".strided")).abs().max().item<double>(), 1e-4);
    // The sums see every pixel, the clip to [0, 255] included.
    EXPECT_LE(relative_error(hwc.to(torch::kDouble).sum({0, 1}), f.tensor(key + ".sum")), 1e-9);
    EXPECT_GE(resized.min().item<float>(), 0.0f);
    EXPECT_LE(resized.max().item<float>(), 255.0f);
  }
}

TEST(FidInception, TensorNamesAndShapesArePytorchFids) {
  const auto reference = nlohmann::json::parse(inception_fixture().metadata().at("state_dict"));
  std::map<std::string, std::vector<int64_t>> expected, got;
  for (const auto& [name, shape] : reference.items()) {
    expected[name] = shape.get<std::vector<int64_t>>();
  }
  for (const auto& [name, t] : eval::FidInception().named_tensors()) {
    got[name] = t.sizes().vec();
  }
  EXPECT_EQ(got, expected);
  EXPECT_EQ(got.count("Mixed_7c.branch3x3dbl_3b.bn.running_var"), 1u);
}

// The whole pipeline, uint8 image to pool3 features, against pytorch-fid's network.
TEST(FidInception, MatchesPytorchFidWithSeededWeights) {
  const auto& f = inception_fixture();
  eval::FidInception model;
  fill_seeded(model);
  const at::Tensor pixels = torch::stack({eval::clean_fid_resize(f.tensor("input.image0")),
                                          eval::clean_fid_resize(f.tensor("input.image1"))});
  const at::Tensor features = model.forward(pixels);
  const at::Tensor expected = f.tensor("output.features");
  ASSERT_EQ(features.sizes().vec(), (std::vector<int64_t>{2, eval::kInceptionFeatures}));
  EXPECT_LE(relative_error(features, expected), 1e-4);
  // The two images' features differ far more than the tolerance, so the check has teeth.
  EXPECT_GE(relative_error(expected[0], expected[1]), 1e-2);
  EXPECT_THROW(model.forward(torch::zeros({3, 299, 299})), ShapeError);
}

class FidFiles : public vilau::testing::TempDirTest {};

TEST_F(FidFiles, InceptionLoadsByNameAndNamesBadTensors) {
  eval::FidInception seeded;
  fill_seeded(seeded);
  io::NamedTensors tensors;
  for (const auto& [name, t] : seeded.named_tensors()) {
    tensors.emplace_back(name, t);
  }
  tensors.emplace_back("fc.weight", torch::zeros({2, 2}));  // unused tensors are ignored
  io::save_safetensors(path("inception.safetensors"), tensors);
  const auto loaded = eval::FidInception::load(path("inception.safetensors")).named_tensors();
  for (const auto& [name, t] : seeded.named_tensors()) {
    ASSERT_TRUE(torch::equal(loaded.at(name), t)) << name;
  }

  io::save_safetensors(path("bad.safetensors"),
                       {{"Conv2d_1a_3x3.conv.weight", torch::zeros({32, 3, 3, 4})}});
  EXPECT_THAT(error_of<ShapeError>([&] { eval::FidInception::load(path("bad.safetensors")); }),
              AllOf(HasSubstr("bad.safetensors"), HasSubstr("Conv2d_1a_3x3.conv.weight"),
                    HasSubstr("expected [32, 3, 3, 3]"), HasSubstr("found [32, 3, 3, 4]")));
  io::save_safetensors(path("other.safetensors"), {{"x", torch::zeros({1})}});
  EXPECT_THAT(error_of<ShapeError>([&] { eval::FidInception::load(path("other.safetensors")); }),
              AllOf(HasSubstr("other.safetensors"), HasSubstr("no such tensor")));
}

TEST(FidStats, MatchNumpyMeanAndCovariance) {
  const auto& f = frechet_fixture();
  for (const std::string name : {"a", "b", "c"}) {
    SCOPED_TRACE(name);
    const eval::FidStats s = eval::compute_fid_stats(f.tensor("features." + name));
    EXPECT_EQ(s.mu.scalar_type(), torch::kDouble);
    EXPECT_EQ(s.count, f.tensor("features." + name).size(0));
    EXPECT_LE(relative_error(s.mu, f.tensor("mu." + name)), 1e-12);
    EXPECT_LE(relative_error(s.sigma, f.tensor("sigma." + name)), 1e-12);
  }
  // Other float types are widened first.
  const eval::FidStats s32 = eval::compute_fid_stats(f.tensor("features.a").to(torch::kFloat));
  EXPECT_LE(relative_error(s32.sigma, f.tensor("sigma.a")), 1e-5);
  EXPECT_THROW(eval::compute_fid_stats(torch::zeros({1, 4})), ShapeError);
}

TEST(FidStats, FrechetMatchesPytorchFid) {
  const auto& f = frechet_fixture();
  const eval::FidStats a = fixture_stats("a"), b = fixture_stats("b"), c = fixture_stats("c");
  const double ab = f.tensor("fid.ab").item<double>(), ac = f.tensor("fid.ac").item<double>();
  // b is badly conditioned (1e8), c singular: scipy's sqrtm and the eigen route agree.
  EXPECT_NEAR(eval::frechet_distance(a, b), ab, 1e-6 * ab);
  EXPECT_NEAR(eval::frechet_distance(b, a), ab, 1e-6 * ab);
  EXPECT_NEAR(eval::frechet_distance(a, c), ac, 1e-6 * ac);
  EXPECT_NEAR(eval::frechet_distance(c, a), ac, 1e-6 * ac);
  // Identical statistics: zero, up to rounding against traces of about 64. sigma_c has 25
  // zero eigenvalues whose rounding noise (~1e-15) the square root lifts to ~1e-7 each;
  // pytorch-fid gives -8e-7 there.
  EXPECT_NEAR(eval::frechet_distance(a, a), 0.0, 1e-9);
  EXPECT_NEAR(eval::frechet_distance(c, c), 0.0, 1e-5);
  const eval::FidStats small{a.mu.slice(0, 0, 8), a.sigma.slice(0, 0, 8).slice(1, 0, 8), 300};
  EXPECT_THAT(error_of<ShapeError>([&] { eval::frechet_distance(a, small); }),
              AllOf(HasSubstr("d = 64"), HasSubstr("d = 8")));
}

TEST_F(FidFiles, StatsRoundTripAndMatchTheCommittedFiles) {
  const eval::FidStats a = fixture_stats("a");
  eval::save_fid_stats(path("a.safetensors"), a);
  const eval::FidStats back = eval::load_fid_stats(path("a.safetensors"));
  vilau::testing::expect_bitwise_equal(back.mu, a.mu);
  vilau::testing::expect_bitwise_equal(back.sigma, a.sigma);
  EXPECT_EQ(back.count, 300);
  // The CLI test's files (written by the reference script) read as the same statistics.
  const eval::FidStats committed =
      eval::load_fid_stats(VILAU_TEST_DATA_DIR "/fid/stats_a.safetensors");
  vilau::testing::expect_bitwise_equal(committed.sigma, a.sigma);
  EXPECT_EQ(committed.count, 300);
}

TEST_F(FidFiles, LoadRejectsWrongDtypeShapeAndSizes) {
  const at::Tensor mu = torch::zeros({4}, torch::kDouble), sigma = torch::eye(4, torch::kDouble);
  io::save_safetensors(path("f32.safetensors"), {{"mu", mu.to(torch::kFloat)}, {"sigma", sigma}});
  EXPECT_THAT(error_of<ShapeError>([&] { eval::load_fid_stats(path("f32.safetensors")); }),
              AllOf(HasSubstr("f32.safetensors: 'mu'"), HasSubstr("expected F64 [d]"),
                    HasSubstr("found F32 [4]")));
  io::save_safetensors(path("rank.safetensors"), {{"mu", mu}, {"sigma", mu}});
  EXPECT_THAT(error_of<ShapeError>([&] { eval::load_fid_stats(path("rank.safetensors")); }),
              AllOf(HasSubstr("rank.safetensors: 'sigma'"), HasSubstr("expected F64 [d, d]"),
                    HasSubstr("found F64 [4]")));
  io::save_safetensors(path("sizes.safetensors"),
                       {{"mu", mu}, {"sigma", torch::zeros({4, 3}, torch::kDouble)}});
  EXPECT_THAT(error_of<ShapeError>([&] { eval::load_fid_stats(path("sizes.safetensors")); }),
              AllOf(HasSubstr("sizes.safetensors: 'sigma'"), HasSubstr("expected F64 [4, 4]"),
                    HasSubstr("found F64 [4, 3]")));
  io::save_safetensors(path("missing.safetensors"), {{"mu", mu}});
  EXPECT_THAT(error_of<FormatError>([&] { eval::load_fid_stats(path("missing.safetensors")); }),
              AllOf(HasSubstr("missing.safetensors: 'sigma'"), HasSubstr("no such tensor")));
  EXPECT_THROW(eval::save_fid_stats(path("bad.safetensors"), {mu, mu, 1}), ShapeError);
}

TEST_F(FidFiles, ListsImagesSortedAndRejectsEmptyFolders) {
  for (const char* name : {"b.PNG", "a.jpg", "c.jpeg", "notes.txt"}) {
    std::ofstream(path(name)) << "x";
  }
  std::filesystem::create_directories(path("sub.png"));
  EXPECT_THAT(eval::list_fid_images(dir_.string()),
              ElementsAre(EndsWith("/a.jpg"), EndsWith("/b.PNG"), EndsWith("/c.jpeg")));
  std::filesystem::create_directories(path("empty"));
  EXPECT_THAT(error_of<IoError>([&] { eval::list_fid_images(path("empty")); }),
              AllOf(HasSubstr("empty"), HasSubstr(".png/.jpg/.jpeg"), HasSubstr("found none")));
  EXPECT_THAT(error_of<IoError>([&] { eval::list_fid_images(path("nowhere")); }),
              HasSubstr("no such folder"));
}

TEST_F(FidFiles, FolderFeaturesKeepOrderAcrossBatchesAndNameCorruptImages) {
  const auto& f = inception_fixture();
  std::vector<std::string> paths;
  for (int i = 0; i < 3; ++i) {
    paths.push_back(path("img" + std::to_string(i) + ".png"));
    const at::Tensor image = f.tensor("input.image" + std::to_string(i % 2));
    io::write_image(paths.back(), i == 2 ? image.flip({1}) : image);
  }
  eval::FidInception model;
  fill_seeded(model);
  const eval::FidFeatureExtractor extractor(model);
  const at::Tensor batched = extractor.features(paths, 2, false);
  ASSERT_EQ(batched.sizes().vec(), (std::vector<int64_t>{3, eval::kInceptionFeatures}));
  // PNG is lossless, so the first two rows are the reference features.
  EXPECT_LE(relative_error(batched.slice(0, 0, 2), f.tensor("output.features")), 1e-4);
  // One batch of 3 instead of 2 + 1: the same features, in the same order.
  const eval::FidStats stats = extractor.folder_stats(dir_.string(), 3, false);
  EXPECT_EQ(stats.count, 3);
  EXPECT_LE(relative_error(stats.mu, batched.to(torch::kDouble).mean(0)), 1e-5);
  EXPECT_LE(relative_error(stats.sigma, eval::compute_fid_stats(batched).sigma), 1e-5);

  std::filesystem::create_directories(path("one"));
  std::filesystem::copy_file(paths[0], path("one/img0.png"));
  EXPECT_THAT(error_of<IoError>([&] { extractor.folder_stats(path("one"), 2, false); }),
              AllOf(HasSubstr("one: image folder"), HasSubstr("at least 2 images")));
  std::ofstream(path("img3.png")) << "not a png";
  EXPECT_THAT(error_of<FormatError>([&] { extractor.folder_stats(dir_.string(), 4, false); }),
              HasSubstr("img3.png"));
}

}  // namespace
}  // namespace vilau
