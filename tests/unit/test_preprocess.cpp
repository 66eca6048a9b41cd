// Pixels in and out of the tower, and image files.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>

#include "test_util.h"
#include "vilau/core/error.h"
#include "vilau/io/image.h"
#include "vilau/io/safetensors.h"
#include "vilau/vision/preprocess.h"

namespace vilau {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using vilau::testing::error_of;

TEST(Preprocess, NormalisesToMinusOneOne) {
  const at::Tensor rgb =
      torch::tensor({0, 255, 128, 64}, torch::kUInt8).repeat({3}).reshape({2, 2, 3});
  const at::Tensor x = preprocess_image(rgb, 2);  // already S x S: no resampling
  EXPECT_EQ(x.sizes().vec(), (std::vector<int64_t>{3, 2, 2}));
  const at::Tensor expected = (rgb.permute({2, 0, 1}).to(torch::kFloat) / 255.0 - 0.5) / 0.5;
  EXPECT_TRUE(torch::equal(x, expected));
  EXPECT_FLOAT_EQ(x.min().item<float>(), -1.0f);
  EXPECT_FLOAT_EQ(x.max().item<float>(), 1.0f);
}

TEST(Preprocess, ResizesWithoutKeepingAspectAndKeepsConstantsExact) {
  const at::Tensor flat = torch::full({30, 50, 3}, 77, torch::kUInt8);
  const at::Tensor x = preprocess_image(flat, 16);
  EXPECT_EQ(x.sizes().vec(), (std::vector<int64_t>{3, 16, 16}));
  EXPECT_TRUE(torch::allclose(x, torch::full_like(x, (77 / 255.0 - 0.5) / 0.5)));
  // A left-dark, right-bright image stays ordered after the resize.
  at::Tensor ramp = torch::zeros({20, 40, 3}, torch::kUInt8);
  ramp.slice(1, 20, 40).fill_(255);
  const at::Tensor r = preprocess_image(ramp, 8);
  EXPECT_LT(r[0][4][0].item<float>(), r[0][4][7].item<float>());
  EXPECT_THROW(preprocess_image(torch::zeros({4, 4}, torch::kUInt8), 8), ShapeError);
}

// Pillow's bicubic, as the official pipeline resizes (tests/reference/make_preprocess_fixtures.py):
// every pixel identical, shrinking and enlarging.
TEST(Preprocess, ResizeMatchesPillowBicubicExactly) {
  const io::SafetensorsFile f =
      io::SafetensorsFile::open(VILAU_TEST_DATA_DIR "/preprocess/pil_bicubic.safetensors");
  for (int64_t size : {32, 96}) {
    SCOPED_TRACE(size);
    EXPECT_TRUE(torch::equal(pil_bicubic_resize(f.tensor("input"), size, size),
                             f.tensor("pil_bicubic." + std::to_string(size))));
  }
  const at::Tensor x = preprocess_image(f.tensor("input"), 32);
  const at::Tensor expected =
      (f.tensor("pil_bicubic.32").permute({2, 0, 1}).to(torch::kFloat) / 255.0 - 0.5) / 0.5;
  EXPECT_TRUE(torch::equal(x, expected));
}

// RGBA and grey-with-alpha pictures as the official pipeline sees them: read with alpha,
// resized premultiplied, alpha dropped (tests/reference/make_preprocess_fixtures.py).
TEST(Preprocess, AlphaPicturesMatchPillowExactly) {
  const auto fixture =
      io::SafetensorsFile::open(VILAU_TEST_DATA_DIR "/preprocess/pil_alpha.safetensors");
  for (const std::string name : {"rgba", "la"}) {
    const at::Tensor read =
        io::read_image_with_alpha(VILAU_TEST_DATA_DIR "/preprocess/" + name + ".png");
    ASSERT_EQ(read.size(2), 4) << name;
    const at::Tensor input = fixture.tensor("input_" + name);
    // What the file holds, alpha included (LA's grey in each colour channel).
    EXPECT_TRUE(at::equal(read.select(2, 3), input.select(2, input.size(2) - 1))) << name;
    EXPECT_TRUE(at::equal(read.select(2, 0), input.select(2, 0))) << name;
    int64_t differs_from_rgb_first = 0;
    for (const auto& [w, h] :
         std::vector<std::pair<int64_t, int64_t>>{{32, 32}, {96, 96}, {70, 45}}) {
      SCOPED_TRACE(name + " to " + std::to_string(w) + "x" + std::to_string(h));
      const at::Tensor expected =
          fixture.tensor("pil_" + name + "." + std::to_string(w) + "x" + std::to_string(h));
      const at::Tensor got = pil_bicubic_resize(read, w, h).narrow(2, 0, 3);
      EXPECT_EQ(at::abs(got.to(at::kInt) - expected.to(at::kInt)).max().item<int>(), 0);
      // Resizing the colours without their alpha (RGB first) is what this guards against.
      const at::Tensor rgb_first = pil_bicubic_resize(read.narrow(2, 0, 3).contiguous(), w, h);
      differs_from_rgb_first += at::equal(rgb_first, expected) ? 0 : 1;
    }
    EXPECT_EQ(differs_from_rgb_first, 2) << name;  // every real resize; not the same-size copy
  }
  // preprocess_image takes RGBA and drops alpha after the resize.
  const at::Tensor rgba = io::read_image_with_alpha(VILAU_TEST_DATA_DIR "/preprocess/rgba.png");
  const at::Tensor pixels = preprocess_image(rgba, 32);
  const at::Tensor expected = fixture.tensor("pil_rgba.32x32");
  EXPECT_TRUE(
      at::allclose(pixels, (expected.permute({2, 0, 1}).to(at::kFloat) / 255.0 - 0.5) / 0.5));
  // read_image keeps its RGB contract.
  EXPECT_EQ(io::read_image(VILAU_TEST_DATA_DIR "/preprocess/rgba.png").size(2), 3);
}

TEST(Preprocess, SquareCropTakesTopOfPortraitsAndCentreOfLandscapes) {
  const at::Tensor portrait =
      torch::arange(6 * 4, torch::kLong).reshape({6, 4, 1}).expand({6, 4, 3});
  EXPECT_TRUE(torch::equal(square_crop(portrait), portrait.slice(0, 0, 4)));
  const at::Tensor landscape =
      torch::arange(4 * 9, torch::kLong).reshape({4, 9, 1}).expand({4, 9, 3});
  // (9 - 4) / 2 = 2.5 rounds half to even: columns 2..5, as torchvision's CenterCrop.
  EXPECT_TRUE(torch::equal(square_crop(landscape), landscape.slice(1, 2, 6)));
}

TEST(Postprocess, ScalesClampsAndTruncates) {
  const at::Tensor x =
      torch::tensor({-1.0f, 1.0f, 0.0f, 0.999f, 2.0f, -3.0f}).reshape({1, 3, 1, 2});
  const at::Tensor out = postprocess_image(x);
  EXPECT_EQ(out.sizes().vec(), (std::vector<int64_t>{1, 1, 2, 3}));
  // Channel-last: pixel 0 holds channels (x[0], x[2], x[4]), pixel 1 (x[1], x[3], x[5]).
  const at::Tensor longs = out.to(torch::kLong).contiguous();
  const std::vector<int64_t> values(longs.data_ptr<int64_t>(),
                                    longs.data_ptr<int64_t>() + longs.numel());
  // 0 -> 127.5 -> 127 and 0.999 -> 254.87 -> 254: truncation, not rounding.
  EXPECT_EQ(values, (std::vector<int64_t>{0, 127, 255, 255, 254, 0}));
}

class ImageFiles : public vilau::testing::TempDirTest {};

TEST_F(ImageFiles, PngRoundTripIsExact) {
  const at::Tensor rgb = torch::randint(0, 256, {7, 5, 3}, torch::kUInt8);
  io::write_image(path("a.png"), rgb);
  EXPECT_TRUE(torch::equal(io::read_image(path("a.png")), rgb));
}

TEST_F(ImageFiles, MissingAndCorruptFilesAreClearErrors) {
  EXPECT_THAT(error_of<IoError>([&] { io::read_image(path("none.png")); }),
              AllOf(HasSubstr("none.png"), HasSubstr("no such file")));
  std::ofstream(path("bad.png"), std::ios::binary) << "\x89PNG\r\n\x1a\n truncated";
  EXPECT_THAT(error_of<FormatError>([&] { io::read_image(path("bad.png")); }),
              AllOf(HasSubstr("bad.png"), HasSubstr("cannot decode image")));
  EXPECT_THAT(error_of<ShapeError>(
                  [&] { io::write_image(path("x.png"), torch::zeros({2, 2}, torch::kUInt8)); }),
              HasSubstr("expected uint8 [H, W, 3]"));
}

}  // namespace
}  // namespace vilau
