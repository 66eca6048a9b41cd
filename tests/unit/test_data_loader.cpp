// The loader on fixtures the tests write: templates per task, determinism for any number
// of workers, exact resume, sharding, mixture weights, bad data and max_length.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <set>

#include "test_data_fixtures.h"
#include "test_util.h"
#include "vilau/core/error.h"
#include "vilau/data/loader.h"
#include "vilau/data/transforms.h"
#include "vilau/io/image.h"
#include "vilau/tokenizer/conversation.h"
#include "vilau/vision/preprocess.h"

namespace vilau::data {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using vilau::testing::data_tokenizer;
using vilau::testing::error_of;

class DataLoaderTest : public vilau::testing::TempDirTest {
 protected:
  // `n` caption pairs with distinct images; returns the manifest path.
  std::string captions(const std::string& name, int n, int first = 0) {
    std::string lines;
    for (int i = first; i < first + n; ++i) {
      const std::string image = name + "_" + std::to_string(i) + ".png";
      testing::write_image(path(image), testing::solid(12, 20, 10 * i, 100, 200 - 5 * i));
      lines +=
          "{\"image\": \"" + image + "\", \"caption\": \"picture " + std::to_string(i) + "\"}\n";
    }
    testing::write_text(path(name + ".jsonl"), lines);
    return path(name + ".jsonl");
  }

  DataConfig config(std::vector<std::string> datasets, int64_t batch, int64_t workers) const {
    DataConfig c;
    c.datasets = std::move(datasets);
    c.image_size = 8;
    c.batch_size = batch;
    c.num_workers = workers;
    c.seed = 7;
    return c;
  }

  // Every batch of `epochs` epochs (an epoch ends at nullopt).
  static std::vector<DataBatch> run(DataLoader& loader, int epochs) {
    std::vector<DataBatch> out;
    for (int e = 0; e < epochs; ++e) {
      while (auto batch = loader.next()) {
        out.push_back(std::move(*batch));
      }
    }
    return out;
  }
};

void expect_same(const std::vector<DataBatch>& a, const std::vector<DataBatch>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].ids, b[i].ids) << "batch " << i;
    EXPECT_TRUE(a[i].batch.input_ids.equal(b[i].batch.input_ids)) << "batch " << i;
    EXPECT_TRUE(a[i].batch.labels.equal(b[i].batch.labels)) << "batch " << i;
    EXPECT_TRUE(a[i].batch.attention_mask.equal(b[i].batch.attention_mask)) << "batch " << i;
    EXPECT_TRUE(a[i].batch.images.equal(b[i].batch.images)) << "batch " << i;
    EXPECT_EQ(a[i].position, b[i].position) << "batch " << i;
  }
}

std::vector<std::string> all_ids(const std::vector<DataBatch>& batches) {
  std::vector<std::string> ids;
  for (const DataBatch& b : batches) {
    ids.insert(ids.end(), b.ids.begin(), b.ids.end());
  }
  return ids;
}

TEST_F(DataLoaderTest, UnderstandingSampleUsesTheSftTemplate) {
  testing::write_image(path("a.png"), testing::solid(10, 14, 0, 255, 0));
  testing::write_text(
      path("sft.jsonl"),
      R"({"image": "a.png", "conversations": [{"from": "human", "value": "What?<image>"}, {"from": "gpt", "value": "Green."}]})"
      "\n");
  DataLoader loader(
      config({"path=" + path("sft.jsonl") + ", format=llava, task=understanding"}, 1, 0),
      data_tokenizer());
  const auto batch = loader.next();
  ASSERT_TRUE(batch.has_value());
  const TrainingSample expected =
      make_training_sample(data_tokenizer(), {{"<im_start><image><im_end>\nWhat?", "Green."}});
  EXPECT_TRUE(batch->batch.input_ids[0].equal(torch::tensor(expected.input_ids)));
  EXPECT_TRUE(batch->batch.labels[0].equal(torch::tensor(expected.labels)));
  EXPECT_TRUE(
      batch->batch.images.equal(preprocess_image(io::read_image(path("a.png")), 8).unsqueeze(0)));
  EXPECT_EQ(batch->ids, std::vector<std::string>{path("sft.jsonl") + ":1"});
  EXPECT_FALSE(loader.next().has_value());
  EXPECT_EQ(loader.position(), (DataPosition{1, 0}));
}

TEST_F(DataLoaderTest, SeveralImagesAndVideosInConversations) {
  testing::write_image(path("a.png"), testing::solid(10, 10, 0, 0, 200));
  testing::write_image(path("b.png"), testing::solid(10, 10, 200, 0, 0));
  testing::write_video(path("clip.avi"), 6);
  testing::write_text(
      path("sft.jsonl"),
      R"({"image": ["b.png", "a.png"], "conversations": [{"from": "human", "value": "<image> or <image>?"}, {"from": "gpt", "value": "Both."}]})"
      "\n"
      R"({"video": "clip.avi", "conversations": [{"from": "human", "value": "What?"}, {"from": "gpt", "value": "Grey."}]})"
      "\n");
  DataConfig c =
      config({"path=" + path("sft.jsonl") + ", format=llava, task=understanding, frames=3"}, 1, 2);
  c.seed = 1;
  DataLoader loader(c, data_tokenizer());
  std::map<std::string, DataBatch> by_id;
  while (auto batch = loader.next()) {
    by_id.emplace(batch->ids.at(0), std::move(*batch));
  }
  ASSERT_EQ(by_id.size(), 2u);
  const DataBatch& images = by_id.at(path("sft.jsonl") + ":1");
  const TrainingSample expected = make_training_sample(
      data_tokenizer(), {{"<im_start><image><im_end> or <im_start><image><im_end>?", "Both."}});
  EXPECT_TRUE(images.batch.input_ids[0].equal(torch::tensor(expected.input_ids)));
  ASSERT_EQ(images.batch.images.size(0), 2);
  EXPECT_TRUE(images.batch.images[0].equal(preprocess_image(io::read_image(path("b.png")), 8)));
  EXPECT_TRUE(images.batch.images[1].equal(preprocess_image(io::read_image(path("a.png")), 8)));
  const DataBatch& video = by_id.at(path("sft.jsonl") + ":2");
  const TrainingSample expected_video =
      make_training_sample(data_tokenizer(), {{"<image>\n<image>\n<image>\nWhat?", "Grey."}});
  EXPECT_TRUE(video.batch.input_ids[0].equal(torch::tensor(expected_video.input_ids)));
  EXPECT_EQ(video.batch.images.size(0), 3);
}

TEST_F(DataLoaderTest, GenerationSamplesForImagesVideosAndShards) {
  testing::write_video(path("clip.avi"), 12);
  testing::write_text(path("clips.jsonl"), R"({"video": "clip.avi", "caption": "grey fade"})"
                                           "\n");
  DataLoader video(
      config({"path=" + path("clips.jsonl") + ", format=captions, task=t2v, frames=4"}, 1, 1),
      data_tokenizer());
  const auto v = video.next();
  ASSERT_TRUE(v.has_value());
  EXPECT_TRUE(v->batch.input_ids[0].equal(
      torch::tensor(make_generation_sample(data_tokenizer(), "grey fade", 4).input_ids)));
  EXPECT_EQ(v->batch.images.sizes(), (std::vector<int64_t>{4, 3, 8, 8}));
  EXPECT_EQ(v->captions, std::vector<std::string>{"grey fade"});

  const cv::Mat tall = testing::solid(30, 10, 255, 0, 0);
  testing::write_tar(path("s.tar"), {{"k.png", testing::encode(".png", tall)}, {"k.txt", "blue"}});
  DataLoader shard(config({"path=" + path("s.tar") + ", format=webdataset, task=t2i"}, 1, 1),
                   data_tokenizer());
  const auto s = shard.next();
  ASSERT_TRUE(s.has_value());
  EXPECT_TRUE(s->batch.input_ids[0].equal(
      torch::tensor(make_generation_sample(data_tokenizer(), "blue").input_ids)));
  // Generation data gets the official top-square crop by default.
  const at::Tensor rgb = decode_image(testing::encode(".png", tall), "tall");
  EXPECT_TRUE(
      s->batch.images.equal(preprocess_image(square_crop(rgb).contiguous(), 8).unsqueeze(0)));
}

// uncond=F trains that share of generation samples on the unconditional prompt, the same
// ones whatever the workers, so a resumed run drops the same samples.
TEST_F(DataLoaderTest, CaptionDropoutUsesTheUnconditionalPrompt) {
  const std::string a = captions("a", 40);
  const at::Tensor uncond =
      torch::tensor(make_unconditional_generation_sample(data_tokenizer()).input_ids);
  const auto count_uncond = [&](int64_t workers) {
    DataLoader loader(config({"path=" + a + ", format=captions, task=t2i, uncond=0.5"}, 1, workers),
                      data_tokenizer());
    int64_t n = 0;
    for (int i = 0; i < 40; ++i) {
      const auto b = loader.next();
      const at::Tensor ids = b->batch.input_ids[0];
      n += ids.size(0) == uncond.size(0) && ids.equal(uncond);
    }
    return n;
  };
  const int64_t dropped = count_uncond(0);
  EXPECT_GT(dropped, 8);
  EXPECT_LT(dropped, 32);
  EXPECT_EQ(count_uncond(2), dropped);
  DataLoader all(config({"path=" + a + ", format=captions, task=t2i, uncond=1"}, 1, 0),
                 data_tokenizer());
  EXPECT_TRUE(all.next()->batch.input_ids[0].equal(uncond));
}

TEST_F(DataLoaderTest, SameBatchesForAnyNumberOfWorkers) {
  const std::string a = captions("a", 10), b = captions("b", 5, 10);
  const std::vector<std::string> mixture = {
      "path=" + a + ", format=captions, task=t2i",
      "path=" + b + ", format=captions, task=tower, " + "weight=2, flip=true"};
  DataLoader inline_loader(config(mixture, 3, 0), data_tokenizer());
  const auto expected = run(inline_loader, 2);
  ASSERT_EQ(expected.size(), 2u * 7u);  // 20 samples per epoch in batches of 3
  for (const int64_t workers : {1, 3}) {
    DataLoader loader(config(mixture, 3, workers), data_tokenizer());
    expect_same(run(loader, 2), expected);
  }
  // The epochs differ in order, and another seed gives another order.
  EXPECT_NE(expected[0].ids, expected[7].ids);
  DataConfig other = config(mixture, 3, 2);
  other.seed = 8;
  DataLoader reseeded(other, data_tokenizer());
  EXPECT_NE(reseeded.next()->ids, expected[0].ids);
}

TEST_F(DataLoaderTest, ResumingFromAPositionContinuesExactly) {
  const std::vector<std::string> mixture = {"path=" + captions("a", 11) +
                                            ", format=captions, task=t2i"};
  DataLoader whole(config(mixture, 2, 2), data_tokenizer());
  const auto expected = run(whole, 2);  // 6 batches per epoch
  ASSERT_EQ(expected.size(), 12u);
  for (const size_t k : {0u, 3u, 5u, 8u}) {
    const DataPosition saved =
        DataPosition::from_json(nlohmann::json::parse(expected[k].position.to_json().dump()));
    DataLoader resumed(config(mixture, 2, 3), data_tokenizer(), 0, 1, saved);
    std::vector<DataBatch> rest = run(resumed, saved.epoch == 0 ? 2 : 1);
    expect_same(rest, std::vector<DataBatch>(expected.begin() + k + 1, expected.end()));
  }
  EXPECT_THAT(error_of<FormatError>([] {
                DataPosition::from_json(nlohmann::json{{"epoch", 1}}, "ckpt/data.json");
              }),
              AllOf(HasSubstr("ckpt/data.json"), HasSubstr("'index'")));
}

TEST_F(DataLoaderTest, TwoRanksSeeEverySampleOncePerEpoch) {
  const std::vector<std::string> mixture = {
      "path=" + captions("a", 9) + ", format=captions, task=t2i",
      "path=" + captions("b", 4, 9) + ", format=captions, task=t2i"};
  for (int epoch = 0; epoch < 2; ++epoch) {
    std::multiset<std::string> seen;
    for (int64_t rank = 0; rank < 2; ++rank) {
      DataLoader loader(config(mixture, 2, 2), data_tokenizer(), rank, 2, {epoch, 0});
      EXPECT_EQ(loader.samples_in_epoch(), rank == 0 ? 7 : 6);
      for (const std::string& id : all_ids(run(loader, 1))) {
        seen.insert(id);
      }
    }
    EXPECT_EQ(seen.size(), 13u);
    EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), 13u);
  }
  EXPECT_THAT(
      error_of<ConfigError>([&] { DataLoader(config(mixture, 2, 0), data_tokenizer(), 2, 2); }),
      HasSubstr("rank"));
}

TEST_F(DataLoaderTest, WeightsRepeatOrSubsampleDatasets) {
  const std::vector<std::string> mixture = {
      "path=" + captions("a", 4) + ", format=captions, task=t2i, weight=2",
      "path=" + captions("b", 4, 4) + ", format=captions, task=t2i, weight=0.5"};
  DataLoader loader(config(mixture, 4, 1), data_tokenizer());
  std::map<std::string, int> counts;
  for (const std::string& id : all_ids(run(loader, 1))) {
    ++counts[id];
  }
  int from_a = 0, from_b = 0;
  for (const auto& [id, n] : counts) {
    if (id.find("a.jsonl") != std::string::npos) {
      EXPECT_EQ(n, 2) << id;
      from_a += n;
    } else {
      EXPECT_EQ(n, 1) << id;
      from_b += n;
    }
  }
  EXPECT_EQ(from_a, 8);
  EXPECT_EQ(from_b, 2);
}

class DataBadTest : public DataLoaderTest {
 protected:
  // 6 good samples, then a corrupt image, a missing one, a malformed line and an empty
  // caption.
  std::string mixed_manifest() {
    std::string lines;
    for (int i = 0; i < 6; ++i) {
      testing::write_image(path(std::to_string(i) + ".png"), testing::solid(9, 9, i, i, i));
      lines += "{\"image\": \"" + std::to_string(i) + ".png\", \"caption\": \"ok\"}\n";
    }
    testing::write_text(path("corrupt.png"), "\x89PNG but not really");
    lines += "{\"image\": \"corrupt.png\", \"caption\": \"corrupt\"}\n";
    lines += "{\"image\": \"missing.png\", \"caption\": \"missing\"}\n";
    lines += "{\"image\": \"0.png\", \"caption\": \"trunc\n";
    lines += "{\"image\": \"0.png\", \"caption\": \"\"}\n";
    testing::write_text(path("mixed.jsonl"), lines);
    return "path=" + path("mixed.jsonl") + ", format=captions, task=t2i";
  }
};

TEST_F(DataBadTest, SkipsAndCountsBadSamples) {
  DataConfig c = config({mixed_manifest()}, 4, 2);
  c.max_bad_fraction = 0.5;
  DataLoader loader(c, data_tokenizer());
  const auto ids = all_ids(run(loader, 1));
  EXPECT_EQ(ids.size(), 6u);
  const DataSummary s = loader.summary();
  EXPECT_EQ(s.good, 6);
  EXPECT_EQ(s.bad, 4);
  EXPECT_EQ(s.seen, 10);
  EXPECT_EQ(
      s.bad_by_reason,
      (std::map<std::string, int64_t>{
          {"corrupt_image", 1}, {"empty_caption", 1}, {"malformed_json", 1}, {"missing_file", 1}}));
  EXPECT_THAT(s.example_by_reason.at("missing_file"), HasSubstr("missing.png"));
  EXPECT_THAT(s.example_by_reason.at("corrupt_image"), HasSubstr("corrupt.png"));
  EXPECT_THAT(s.example_by_reason.at("malformed_json"), HasSubstr("mixed.jsonl:9"));
  EXPECT_EQ(s.to_json()["bad_by_reason"]["missing_file"], 1);
}

// A conversation whose rounds do not add up would train on no labels at all.
TEST_F(DataBadTest, ConversationWhoseRoundsDoNotAddUpIsBad) {
  testing::write_image(path("0.png"), testing::solid(9, 9, 0, 0, 0));
  const std::string turn =
      R"({"image": "0.png", "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": ANSWER}]})";
  std::string lines;
  for (const char* answer : {"\"red\"", "\"red</s>blue\""}) {
    std::string line = turn;
    lines += line.replace(line.find("ANSWER"), 6, answer) + "\n";
  }
  testing::write_text(path("vqa.jsonl"), lines);
  DataConfig c = config({"path=" + path("vqa.jsonl") + ", format=llava, task=understanding"}, 2, 0);
  c.max_bad_fraction = 0.5;
  DataLoader loader(c, data_tokenizer());
  EXPECT_EQ(all_ids(run(loader, 1)).size(), 1u);
  const DataSummary s = loader.summary();
  EXPECT_EQ(s.bad_by_reason, (std::map<std::string, int64_t>{{"bad_conversation", 1}}));
  EXPECT_THAT(s.example_by_reason.at("bad_conversation"),
              AllOf(HasSubstr("vqa.jsonl:2"), HasSubstr("rounds cover")));
}

TEST_F(DataBadTest, StopsWhenTooManyAreBad) {
  DataConfig c = config({mixed_manifest()}, 4, 2);
  c.max_bad_fraction = 0.2;
  DataLoader loader(c, data_tokenizer());
  EXPECT_THAT(error_of<FormatError>([&] { run(loader, 1); }),
              AllOf(HasSubstr("4 of 10 samples are bad"), HasSubstr("max_bad_fraction 0.2"),
                    HasSubstr("missing_file 1"), HasSubstr("missing.png")));
  // Mid-epoch, once bad_check_after samples were seen.
  c.bad_check_after = 5;
  c.batch_size = 1;
  DataLoader early(c, data_tokenizer());
  EXPECT_THAT(error_of<FormatError>([&] {
                for (int i = 0; i < 5; ++i) {
                  early.next();
                }
              }),
              HasSubstr("max_bad_fraction"));
}

TEST_F(DataLoaderTest, MaxLengthDropsVisualSamplesAndTrimsText) {
  testing::write_text(
      path("text.jsonl"),
      R"({"conversations": [{"from": "human", "value": "Tell me a long story"}, {"from": "gpt", "value": "Once upon a time there was a very long story."}]})"
      "\n");
  DataConfig c = config({"path=" + captions("a", 3) + ", format=captions, task=t2i",
                         "path=" + path("text.jsonl") + ", format=llava, task=understanding"},
                        4, 1);
  c.tokens_per_image = 256;
  c.max_length = 40;
  DataLoader loader(c, data_tokenizer());
  const auto batches = run(loader, 1);
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0].ids, std::vector<std::string>{path("text.jsonl") + ":1"});
  EXPECT_EQ(batches[0].batch.input_ids.size(1), 40);
  EXPECT_FALSE(batches[0].batch.images.defined());
  EXPECT_EQ(loader.summary().too_long, 3);
  EXPECT_EQ(loader.summary().trimmed, 1);
  EXPECT_EQ(loader.summary().bad, 0);
}

TEST_F(DataLoaderTest, PackingFillsRowsDeterministicallyAndResumes) {
  DataConfig c = config({"path=" + captions("a", 13) + ", format=captions, task=t2i"}, 2, 0);
  c.packing = true;
  c.tokens_per_image = 4;
  const int64_t one = make_generation_sample(data_tokenizer(), "picture 10").input_ids.size() + 3;
  c.max_length = 3 * one;  // two or three samples per row
  DataLoader loader(c, data_tokenizer());
  const auto expected = run(loader, 2);
  std::multiset<std::string> epoch0;
  int64_t shared_rows = 0;  // rows holding more than one sample
  for (const DataBatch& b : expected) {
    ASSERT_TRUE(b.segment_ids.defined());
    const at::Tensor images = b.batch.input_ids.eq(kImageTokenIndex);
    EXPECT_EQ(images.sum().item<int64_t>(), b.batch.images.size(0));
    const at::Tensor expanded = b.batch.attention_mask.sum(1) + images.sum(1) * 3;
    EXPECT_LE(expanded.max().item<int64_t>(), c.max_length);
    shared_rows += b.segment_ids.amax(1).gt(1).sum().item<int64_t>();
    if (b.position.epoch == 0) {
      epoch0.insert(b.ids.begin(), b.ids.end());
    }
  }
  EXPECT_GT(shared_rows, 4);
  EXPECT_EQ(epoch0.size(), 13u);
  EXPECT_EQ(std::set<std::string>(epoch0.begin(), epoch0.end()).size(), 13u);
  c.num_workers = 3;
  DataLoader threaded(c, data_tokenizer());
  const auto again = run(threaded, 2);
  expect_same(again, expected);
  for (size_t i = 0; i < again.size(); ++i) {
    EXPECT_TRUE(again[i].segment_ids.equal(expected[i].segment_ids));
  }
  for (const size_t k : {0u, 1u}) {
    DataLoader resumed(c, data_tokenizer(), 0, 1, expected[k].position);
    expect_same(run(resumed, 2), std::vector<DataBatch>(expected.begin() + k + 1, expected.end()));
  }
  c.max_length = 0;
  EXPECT_THAT(error_of<ConfigError>([&] { c.validate("data"); }), HasSubstr("packing"));
}

TEST_F(DataLoaderTest, UnderstandingFromAShard) {
  testing::write_tar(
      path("u.tar"),
      {{"q1.jpg", testing::encode(".jpg", testing::solid(12, 12, 30, 60, 90))},
       {"q1.json",
        R"({"conversations": [{"from": "human", "value": "Colour?"}, {"from": "gpt", "value": "Brown."}]})"}});
  DataLoader loader(
      config({"path=" + path("u.tar") + ", format=webdataset, task=understanding"}, 1, 1),
      data_tokenizer());
  const auto batch = loader.next();
  ASSERT_TRUE(batch.has_value());
  const TrainingSample expected =
      make_training_sample(data_tokenizer(), {{"<im_start><image><im_end>\nColour?", "Brown."}});
  EXPECT_TRUE(batch->batch.input_ids[0].equal(torch::tensor(expected.input_ids)));
  EXPECT_EQ(batch->batch.images.size(0), 1);
  EXPECT_EQ(batch->ids, std::vector<std::string>{path("u.tar") + ":q1"});
}

}  // namespace
}  // namespace vilau::data
