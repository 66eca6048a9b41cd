// The data formats on fixtures the tests write: the mixture config, caption and LLaVA
// manifests, webdataset shards, videos and frame folders, transforms, templates, batching.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "test_data_fixtures.h"
#include "test_util.h"
#include "vilau/core/error.h"
#include "vilau/data/collate.h"
#include "vilau/data/config.h"
#include "vilau/data/manifest.h"
#include "vilau/data/tar_reader.h"
#include "vilau/data/transforms.h"
#include "vilau/data/video.h"
#include "vilau/vision/preprocess.h"

namespace vilau::data {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using vilau::testing::encode;
using vilau::testing::error_of;
using vilau::testing::solid;
using vilau::testing::TempDirTest;
using vilau::testing::write_image;
using vilau::testing::write_tar;
using vilau::testing::write_text;
using vilau::testing::write_video;

DatasetSpec spec_of(const std::string& text) {
  DataConfig c;
  c.datasets = {text};
  return c.mixture().at(0);
}

TEST(DataConfig, ReadsTheMixtureFromYaml) {
  const ConfigTree tree = ConfigTree::parse(
      "datasets:\n"
      "  - path=sft.json, format=llava, task=understanding, weight=2\n"
      "  - path=clips.jsonl, format=captions, task=t2v, frames=4\n"
      "  - path=shards, format=webdataset, task=tower, flip=true, resize=pad\n"
      "root: /data\n"
      "batch_size: 4\n",
      "data.yaml");
  DataConfig config;
  ConfigReader(tree.root()).read(config);
  config.validate("data");
  const auto specs = config.mixture();
  ASSERT_EQ(specs.size(), 3u);
  EXPECT_EQ(specs[0].path, "/data/sft.json");
  EXPECT_EQ(specs[0].task, Task::understanding);
  EXPECT_EQ(specs[0].weight, 2.0);
  EXPECT_EQ(specs[0].resize, ResizeMode::resize);
  EXPECT_EQ(specs[1].frames, 4);
  EXPECT_EQ(specs[1].resize, ResizeMode::square_crop);  // "auto" for generation data
  EXPECT_TRUE(specs[2].flip);
  EXPECT_EQ(specs[2].resize, ResizeMode::pad);
  EXPECT_EQ(config.batch_size, 4);
}

TEST(DataConfig, RejectsBadDatasetsNamingTheEntry) {
  DataConfig c;
  c.datasets = {"path=a.jsonl, format=captions, task=t2i", "path=b.jsonl, format=csv, task=t2i"};
  EXPECT_THAT(error_of<ConfigError>([&] { c.validate("data"); }),
              AllOf(HasSubstr("data.datasets[1].format"), HasSubstr("'csv'")));
  c.datasets = {"path=a.jsonl, format=captions, task=t2i, flip=true"};
  EXPECT_THAT(error_of<ConfigError>([&] { c.validate("data"); }),
              HasSubstr("flip=true only with task=tower"));
  c.datasets = {"path=a.jsonl, format=llava, task=understanding, uncond=0.1"};
  EXPECT_THAT(error_of<ConfigError>([&] { c.validate("data"); }),
              HasSubstr("uncond only with task=t2i or t2v"));
  c.datasets = {"path=a.jsonl, format=captions, task=t2i, uncond=1.5"};
  EXPECT_THAT(error_of<ConfigError>([&] { c.validate("data"); }),
              AllOf(HasSubstr("data.datasets[0].uncond"), HasSubstr("a fraction in [0, 1]")));
  c.datasets = {"path=a.jsonl, task=t2i"};
  EXPECT_THAT(error_of<ConfigError>([&] { c.validate("data"); }), HasSubstr("'format=...'"));
  c.datasets = {"path=a.jsonl, format=captions, task=t2i, wieght=2"};
  EXPECT_THAT(error_of<ConfigError>([&] { c.validate("data"); }), HasSubstr("'wieght=2'"));
  c.datasets = {"path=a.jsonl, format=captions, task=t2i, weight=two"};
  EXPECT_THAT(error_of<ConfigError>([&] { c.validate("data"); }),
              AllOf(HasSubstr("data.datasets[0].weight"), HasSubstr("a number")));
  c.datasets = {"path=a.jsonl, format=captions, task=t2i"};
  c.max_bad_fraction = 2;
  EXPECT_THAT(error_of<ConfigError>([&] { c.validate("data"); }),
              HasSubstr("data.max_bad_fraction"));
}

class DataManifest : public TempDirTest {};

// A number beyond double's range is a malformed record like any other, counted by the
// bad-data policy, not an exception that ends the run; in a JSON array it is the file's fault.
TEST_F(DataManifest, OutOfRangeNumbersAreMalformedRecords) {
  write_text(path("big.jsonl"),
             "{\"image\": \"a.png\", \"caption\": \"a cat\"}\n"
             "{\"image\": \"b.png\", \"caption\": \"a dog\", \"score\": 1e999}\n");
  const Manifest m =
      read_dataset(spec_of("path=" + path("big.jsonl") + ", format=captions, task=t2i"));
  ASSERT_EQ(m.samples.size(), 1u);
  ASSERT_EQ(m.bad.size(), 1u);
  EXPECT_EQ(m.bad[0].reason, "malformed_json");
  EXPECT_EQ(m.bad[0].where, path("big.jsonl") + ":2");
  write_text(path("big.json"), "[{\"image\": \"a.png\", \"caption\": \"x\", \"n\": -1e999}]");
  EXPECT_THAT(error_of<FormatError>([&] {
                read_dataset(spec_of("path=" + path("big.json") + ", format=captions, task=t2i"));
              }),
              AllOf(HasSubstr("big.json"), HasSubstr("invalid JSON")));
}

TEST_F(DataManifest, CaptionPairsKeepGoodLinesAndListBadOnes) {
  write_text(path("caps.jsonl"),
             "{\"image\": \"a.png\", \"caption\": \"a cat\"}\n"
             "{\"image\": \"b.png\", \"caption\": \n"
             "\n"
             "{\"image\": \"c.png\", \"caption\": \"  \"}\n"
             "{\"caption\": \"no image\"}\n"
             "{\"image\": \"/abs/d.png\", \"prompt\": \"a dog\"}\n");
  const Manifest m =
      read_dataset(spec_of("path=" + path("caps.jsonl") + ", format=captions, task=t2i"));
  ASSERT_EQ(m.samples.size(), 2u);
  EXPECT_EQ(m.samples[0].images, std::vector<std::string>{path("a.png")});
  EXPECT_EQ(m.samples[0].caption, "a cat");
  EXPECT_EQ(m.samples[0].where, path("caps.jsonl") + ":1");
  EXPECT_EQ(m.samples[1].images, std::vector<std::string>{"/abs/d.png"});
  ASSERT_EQ(m.bad.size(), 3u);
  EXPECT_EQ(m.bad[0].reason, "malformed_json");
  EXPECT_EQ(m.bad[0].where, path("caps.jsonl") + ":2");
  EXPECT_EQ(m.bad[1].reason, "empty_caption");
  EXPECT_EQ(m.bad[2].reason, "bad_record");
  EXPECT_THAT(m.bad[2].message, HasSubstr("expected one 'image'"));
}

TEST_F(DataManifest, LlavaArrayWithOneSeveralOrNoImages) {
  write_text(path("sft.json"), R"([
    {"image": "x/a.png", "conversations": [{"from": "human", "value": "<image>\nWhat?"},
                                           {"from": "gpt", "value": "A cat."}]},
    {"image": ["a.png", "b.png"], "conversations": [{"from": "human", "value": "Compare"},
                                                    {"from": "gpt", "value": "Same."}]},
    {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
    {"video": "clip.avi", "conversations": [{"from": "human", "value": "Video?"},
                                             {"from": "gpt", "value": "Yes."}]},
    {"conversations": [{"from": "user", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}
  ])");
  const Manifest m =
      read_dataset(spec_of("path=" + path("sft.json") + ", format=llava, task=understanding"));
  ASSERT_EQ(m.samples.size(), 4u);
  EXPECT_EQ(m.samples[0].images, std::vector<std::string>{path("x/a.png")});
  EXPECT_EQ(m.samples[1].images.size(), 2u);
  EXPECT_TRUE(m.samples[2].images.empty());
  EXPECT_EQ(m.samples[3].video, path("clip.avi"));
  ASSERT_EQ(m.bad.size(), 1u);
  EXPECT_EQ(m.bad[0].where, path("sft.json") + "[4]");
  EXPECT_THAT(m.bad[0].message, HasSubstr("'human' or 'gpt'"));
  // A broken array cannot be split into samples: the whole file is an error.
  write_text(path("broken.json"), "[{\"conversations\": ");
  EXPECT_THAT(
      error_of<FormatError>([&] {
        read_dataset(spec_of("path=" + path("broken.json") + ", format=llava, task=understanding"));
      }),
      HasSubstr("broken.json"));
  EXPECT_THAT(error_of<IoError>([&] {
                read_dataset(spec_of("path=" + path("none.json") + ", format=llava, task=t2i"));
              }),
              HasSubstr("none.json"));
}

TEST_F(DataManifest, WebdatasetShardsPairImagesWithJsonOrTxt) {
  const cv::Mat red = solid(8, 8, 0, 0, 255);
  write_tar(path("s0.tar"), {{"dir/k1.jpg", encode(".jpg", red)},
                             {"dir/k1.json", "{\"caption\": \"red\"}"},
                             {"dir/k2.png", encode(".png", red)},
                             {"dir/k2.txt", "plain text"},
                             {"dir/k3.txt", "no image"},
                             {"dir/k4.png", encode(".png", red)},
                             {"dir/k4.json", "{broken"}});
  write_tar(path("s1.tar"), {{"k5.png", encode(".png", red)}, {"k5.txt", "fifth"}});
  const Manifest m =
      read_dataset(spec_of("path=" + dir_.string() + ", format=webdataset, task=t2i"));
  ASSERT_EQ(m.samples.size(), 3u);
  EXPECT_EQ(m.samples[0].where, path("s0.tar") + ":dir/k1");
  EXPECT_EQ(m.samples[0].caption, "red");
  EXPECT_EQ(m.samples[1].caption, "plain text");
  EXPECT_EQ(m.samples[2].caption, "fifth");
  EXPECT_EQ(m.samples[2].shard, path("s1.tar"));
  ASSERT_EQ(m.bad.size(), 2u);
  EXPECT_EQ(m.bad[0].reason, "missing_file");
  EXPECT_EQ(m.bad[1].reason, "malformed_json");
  // Members are read again straight from their offset.
  const at::Tensor image =
      decode_image(read_tar_member(m.samples[1].shard, m.samples[1].shard_offset), "k2");
  EXPECT_EQ(image.sizes(), (std::vector<int64_t>{8, 8, 3}));
  EXPECT_EQ(image[1][1][0].item<int>(), 255);  // RGB order
}

TEST_F(DataManifest, TarErrorsNameTheShard) {
  write_text(path("bad.tar"), std::string(2048, 'x'));
  EXPECT_THAT(error_of<FormatError>([&] {
                read_dataset(spec_of("path=" + path("bad.tar") + ", format=webdataset, task=t2i"));
              }),
              AllOf(HasSubstr("bad.tar"), HasSubstr("uncompressed tar")));
  EXPECT_EQ(split_key("a/b.c/d.seg.json"),
            (std::pair<std::string, std::string>{"a/b.c/d", "seg.json"}));
}

class DataVideo : public TempDirTest {};

TEST_F(DataVideo, FrameIndicesFollowRoundedLinspace) {
  EXPECT_THAT(uniform_frame_indices(10, 8), ElementsAre(0, 1, 3, 4, 5, 6, 8, 9));
  EXPECT_THAT(uniform_frame_indices(100, 3), ElementsAre(0, 50, 99));  // 49.5 rounds to even
  EXPECT_THAT(uniform_frame_indices(3, 5), ElementsAre(0, 0, 1, 2, 2));
  EXPECT_THAT(uniform_frame_indices(7, 1), ElementsAre(0));
}

TEST_F(DataVideo, ReadsUniformFramesFromAnMjpgFile) {
  write_video(path("clip.avi"), 10);
  const auto frames = read_video_frames(path("clip.avi"), 8);
  ASSERT_EQ(frames.size(), 8u);
  std::vector<int64_t> levels;
  for (const at::Tensor& f : frames) {
    EXPECT_EQ(f.sizes(), (std::vector<int64_t>{32, 32, 3}));
    levels.push_back(std::lround(f.to(torch::kFloat).mean().item<double>() / 10.0) - 1);
  }
  EXPECT_EQ(levels, uniform_frame_indices(10, 8));
}

TEST_F(DataVideo, ReadsAFolderOfFramesAndReportsBadPaths) {
  std::filesystem::create_directories(path("frames"));
  for (int i = 0; i < 4; ++i) {
    write_image(path("frames/f" + std::to_string(i) + ".png"), solid(6, 6, 0, 0, 40 * i));
  }
  const auto frames = read_video_frames(path("frames"), 2);
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(frames[1][2][2][0].item<int>(), 120);  // f3
  EXPECT_THAT(error_of<IoError>([&] { read_video_frames(path("none.avi"), 8); }),
              HasSubstr("none.avi"));
  write_text(path("bad.avi"), "not a video");
  EXPECT_THAT(error_of<FormatError>([&] { read_video_frames(path("bad.avi"), 8); }),
              HasSubstr("bad.avi"));
}

TEST(DataTransforms, ModesCropPadAndFlip) {
  const at::Tensor wide =
      torch::arange(2 * 4 * 3, torch::kInt64).to(torch::kUInt8).reshape({2, 4, 3});
  const at::Tensor padded = pad_to_square(wide);
  EXPECT_EQ(padded.sizes(), (std::vector<int64_t>{4, 4, 3}));
  EXPECT_EQ(padded[0][0][0].item<int>(), 127);
  EXPECT_TRUE(padded.slice(0, 1, 3).equal(wide));
  EXPECT_TRUE(center_square(wide).equal(wide.slice(1, 1, 3)));
  const at::Tensor tall = wide.permute({1, 0, 2}).contiguous();
  EXPECT_TRUE(center_square(tall).equal(tall.slice(0, 1, 3)));
  EXPECT_TRUE(transform_image(tall, ResizeMode::square_crop, 2, false)
                  .equal(preprocess_image(tall.slice(0, 0, 2).contiguous(), 2)));
  const at::Tensor resized = transform_image(wide, ResizeMode::resize, 4, false);
  EXPECT_TRUE(resized.equal(preprocess_image(wide, 4)));
  EXPECT_TRUE(transform_image(wide, ResizeMode::resize, 4, true).equal(resized.flip({2})));
  EXPECT_GE(resized.min().item<double>(), -1.0);
  EXPECT_LE(resized.max().item<double>(), 1.0);
  EXPECT_THAT(error_of<FormatError>([&] { decode_image("garbage", "shard.tar:k"); }),
              HasSubstr("shard.tar:k"));
}

nlohmann::json chat(const std::string& question, const std::string& answer) {
  return nlohmann::json::array(
      {{{"from", "human"}, {"value", question}}, {{"from", "gpt"}, {"value", answer}}});
}

TEST(DataTemplates, PlaceholdersFollowTheOfficialLayout) {
  auto turns = conversation_turns(chat("What is it?\n<image>", "A cat."), 1, 0, "s");
  EXPECT_EQ(turns[0].user, "<im_start><image><im_end>\nWhat is it?");
  turns = conversation_turns(chat("What is it?", "A cat."), 1, 0, "s");
  EXPECT_EQ(turns[0].user, "<im_start><image><im_end>\nWhat is it?");
  turns = conversation_turns(chat("Describe <image>", "Frames."), 0, 3, "s");
  EXPECT_EQ(turns[0].user, "<image>\n<image>\n<image>\nDescribe");
  turns = conversation_turns(chat("A <image> B <image>", "Two."), 2, 0, "s");
  EXPECT_EQ(turns[0].user, "A <im_start><image><im_end> B <im_start><image><im_end>");
  turns = conversation_turns(chat("Hi", "Hello"), 0, 0, "s");
  EXPECT_EQ(turns[0].user, "Hi");
  EXPECT_THAT(error_of<FormatError>(
                  [&] { conversation_turns(chat("A <image>", "One."), 2, 0, "m.json[3]"); }),
              AllOf(HasSubstr("m.json[3]"), HasSubstr("2 (one per image)")));
  nlohmann::json leading_gpt = chat("Q", "A");
  leading_gpt.insert(leading_gpt.begin(),
                     nlohmann::json::object({{"from", "gpt"}, {"value", "ignored"}}));
  EXPECT_EQ(conversation_turns(leading_gpt, 0, 0, "s").size(), 1u);
}

TEST(DataCollate, RightPadsAndStacksImagesInOrder) {
  ProcessedSample a, b;
  a.input_ids = {1, 5, kImageTokenIndex, 7};
  a.labels = {kIgnoreIndex, kIgnoreIndex, kIgnoreIndex, 7};
  a.images = {torch::full({3, 2, 2}, 0.5)};
  b.input_ids = {1, kImageTokenIndex, kImageTokenIndex};
  b.labels = {kIgnoreIndex, kIgnoreIndex, kIgnoreIndex};
  b.images = {torch::full({3, 2, 2}, -0.5), torch::full({3, 2, 2}, 0.25)};
  const MultimodalBatch batch = collate({a, b}, 0);
  EXPECT_TRUE(batch.input_ids.equal(torch::tensor({{1, 5, -200, 7}, {1, -200, -200, 0}})));
  EXPECT_TRUE(batch.attention_mask.equal(torch::tensor({{1, 1, 1, 1}, {1, 1, 1, 0}})));
  EXPECT_EQ(batch.labels[1][3].item<int64_t>(), kIgnoreIndex);
  ASSERT_EQ(batch.images.sizes(), (std::vector<int64_t>{3, 3, 2, 2}));
  EXPECT_EQ(batch.images[1][0][0][0].item<float>(), -0.5f);
  EXPECT_EQ(batch.images[2][0][0][0].item<float>(), 0.25f);

  EXPECT_EQ(expanded_length(a.input_ids, 256), 259);
  EXPECT_EQ(fit_length(a, 259, 256), LengthFit::fits);
  EXPECT_EQ(fit_length(a, 258, 256), LengthFit::too_long);
  ProcessedSample text;
  text.input_ids = {1, 2, 3, 4, 5};
  text.labels = {-100, 2, 3, 4, 5};
  EXPECT_EQ(fit_length(text, 3, 256), LengthFit::trimmed);
  EXPECT_EQ(text.input_ids, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(text.labels.size(), 3u);
}

TEST(DataCollate, PacksRowsWithSegmentIds) {
  ProcessedSample a, b, c;
  a.input_ids = {1, kImageTokenIndex, 2};
  a.labels = {-100, -100, 2};
  a.images = {torch::full({3, 2, 2}, 0.5)};
  b.input_ids = {1, 3};
  b.labels = {-100, 3};
  c.input_ids = {1, kImageTokenIndex};
  c.labels = {-100, -100};
  c.images = {torch::full({3, 2, 2}, -0.5)};
  const PackedBatch packed = collate_packed({{a, b}, {c}}, 0);
  EXPECT_TRUE(
      packed.batch.input_ids.equal(torch::tensor({{1, -200, 2, 1, 3}, {1, -200, 0, 0, 0}})));
  EXPECT_TRUE(packed.batch.labels.equal(
      torch::tensor({{-100, -100, 2, -100, 3}, {-100, -100, -100, -100, -100}})));
  EXPECT_TRUE(packed.segment_ids.equal(torch::tensor({{1, 1, 1, 2, 2}, {1, 1, 0, 0, 0}})));
  EXPECT_TRUE(packed.batch.attention_mask.equal(packed.segment_ids.gt(0).to(torch::kInt64)));
  ASSERT_EQ(packed.batch.images.size(0), 2);
  EXPECT_EQ(packed.batch.images[1][0][0][0].item<float>(), -0.5f);
}

}  // namespace
}  // namespace vilau::data
