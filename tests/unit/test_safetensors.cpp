// safetensors: round trips for every dtype, sharding, and one test per malformed file.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_util.h"
#include "vilau/core/error.h"
#include "vilau/io/safetensors.h"
#include "vilau/io/tensor_store.h"

namespace vilau::io {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using vilau::testing::expect_bitwise_equal;

class Safetensors : public vilau::testing::TempDirTest {
 protected:
  // A file with the given JSON header text and `data_bytes` zero bytes after it.
  std::string raw(const std::string& name, const std::string& header, size_t data_bytes,
                  int64_t claimed_len = -1) {
    std::ofstream out(path(name), std::ios::binary);
    const uint64_t len = claimed_len < 0 ? header.size() : static_cast<uint64_t>(claimed_len);
    out.write(reinterpret_cast<const char*>(&len), 8);
    out << header << std::string(data_bytes, '\0');
    return path(name);
  }
};

template <class Fn>
std::string error_of(Fn fn) {
  return vilau::testing::error_of<Error>(fn);
}

TEST_F(Safetensors, RoundTripsEveryDtypeBitExact) {
  torch::manual_seed(0);
  NamedTensors tensors;
  const auto rnd = torch::randn({3, 5});
  tensors.emplace_back("f64", rnd.to(torch::kDouble));
  tensors.emplace_back("f32", rnd);
  tensors.emplace_back("f16", rnd.to(torch::kHalf));
  tensors.emplace_back("bf16", rnd.to(torch::kBFloat16));
  tensors.emplace_back("i64", torch::randint(-1000000, 1000000, {7}, torch::kLong));
  tensors.emplace_back("i32", torch::randint(-100000, 100000, {2, 2}, torch::kInt));
  tensors.emplace_back("i16", torch::randint(-30000, 30000, {4}, torch::kShort));
  tensors.emplace_back("i8", torch::randint(-128, 127, {9}, torch::kChar));
  tensors.emplace_back("u8", torch::randint(0, 255, {1, 3}, torch::kByte));
  tensors.emplace_back("bool", torch::rand({6}) > 0.5);
  tensors.emplace_back("scalar", torch::tensor(3.5));
  tensors.emplace_back("empty", torch::empty({0, 4}));
  tensors.emplace_back("transposed", rnd.t());  // saved contiguous

  save_safetensors(path("all.safetensors"), tensors, {{"format", "pt"}, {"step", "12"}});
  const SafetensorsFile file = SafetensorsFile::open(path("all.safetensors"));
  EXPECT_EQ(file.metadata().at("step"), "12");
  ASSERT_EQ(file.tensors().size(), tensors.size());
  for (const auto& [name, tensor] : tensors) {
    SCOPED_TRACE(name);
    expect_bitwise_equal(file.tensor(name), tensor);
  }
  EXPECT_EQ(file.find("bf16")->dtype, DType::BF16);
  EXPECT_THAT(error_of([&] { file.tensor("nope"); }), HasSubstr("no tensor named 'nope'"));
}

TEST_F(Safetensors, ReadingIsZeroCopyAndKeepsTheMappingAlive) {
  save_safetensors(path("a.safetensors"), {{"w", torch::arange(16, torch::kFloat)}});
  at::Tensor w;
  {
    const SafetensorsFile file = SafetensorsFile::open(path("a.safetensors"));
    w = file.tensor("w");
    // Two views of the same bytes: nothing was copied.
    EXPECT_EQ(file.tensor("w").data_ptr(), w.data_ptr());
  }
  EXPECT_EQ(w[15].item<float>(), 15.0f);  // the file object is gone, the mapping is not
}

TEST_F(Safetensors, ShardedRoundTripAndStaleShardsRemoved) {
  NamedTensors tensors;
  for (int i = 0; i < 5; ++i) {
    tensors.emplace_back("layers." + std::to_string(i) + ".weight", torch::full({256}, float(i)));
  }
  // 1 KiB per tensor, 2.5 KiB per shard: three shards of 2, 2 and 1 tensors.
  const auto files = save_sharded(dir_.string(), tensors, 2560);
  EXPECT_EQ(files, (std::vector<std::string>{
                       "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                       "model-00003-of-00003.safetensors", "model.safetensors.index.json"}));
  std::ifstream index_file(path("model.safetensors.index.json"));
  const auto index = nlohmann::json::parse(index_file);
  EXPECT_EQ(index["metadata"]["total_size"], 5 * 1024);
  EXPECT_EQ(index["weight_map"]["layers.4.weight"], "model-00003-of-00003.safetensors");

  const TensorStore store = TensorStore::open(dir_.string());
  EXPECT_EQ(store.files().size(), 3u);
  EXPECT_EQ(store.data_bytes(), 5u * 1024);
  for (const auto& [name, tensor] : tensors) {
    expect_bitwise_equal(store.tensor(name), tensor);
  }
  EXPECT_EQ(store.files()[0].metadata().at("format"), "pt");

  // Saving again unsharded leaves exactly one file.
  save_sharded(dir_.string(), tensors, 1 << 30);
  EXPECT_FALSE(fs::exists(path("model.safetensors.index.json")));
  EXPECT_FALSE(fs::exists(path("model-00001-of-00003.safetensors")));
  EXPECT_EQ(TensorStore::open(dir_.string()).names().size(), 5u);
}

TEST_F(Safetensors, SaveRejectsDuplicateNamesAndUnsupportedDtypes) {
  EXPECT_THAT(error_of([&] {
                save_safetensors(path("d.safetensors"),
                                 {{"x", torch::ones(1)}, {"x", torch::ones(1)}});
              }),
              AllOf(HasSubstr("cannot save tensor 'x'"), HasSubstr("found a duplicate")));
  EXPECT_THAT(error_of([&] {
                save_safetensors(path("c.safetensors"),
                                 {{"z", torch::ones(1, torch::kComplexFloat)}});
              }),
              HasSubstr("unsupported tensor dtype"));
  EXPECT_FALSE(fs::exists(path("d.safetensors")));  // nothing half-written is left
}

// --- malformed files: each names the file, the tensor and what was wrong ---------------

TEST_F(Safetensors, TooShort) {
  std::ofstream(path("short.safetensors")) << "abc";
  EXPECT_THAT(error_of([&] { SafetensorsFile::open(path("short.safetensors")); }),
              AllOf(HasSubstr("short.safetensors"), HasSubstr("file too short"),
                    HasSubstr("found 3 bytes")));
}

TEST_F(Safetensors, HeaderLongerThanFile) {
  const auto p = raw("long.safetensors", "{}", 0, 1000);
  EXPECT_THAT(error_of([&] { SafetensorsFile::open(p); }),
              AllOf(HasSubstr("long.safetensors"), HasSubstr("header longer than the file"),
                    HasSubstr("at most 2 header bytes"), HasSubstr("a header length of 1000")));
}

TEST_F(Safetensors, InvalidJson) {
  const auto p = raw("json.safetensors", "{\"a\": [1, 2", 0);
  EXPECT_THAT(error_of([&] { SafetensorsFile::open(p); }),
              AllOf(HasSubstr("json.safetensors"), HasSubstr("invalid JSON header")));
}

TEST_F(Safetensors, HeaderNotAnObject) {
  const auto p = raw("array.safetensors", "[1, 2]", 0);
  EXPECT_THAT(error_of([&] { SafetensorsFile::open(p); }),
              HasSubstr("header: expected a JSON object, found array"));
}

TEST_F(Safetensors, UnknownDtype) {
  const auto p = raw("dtype.safetensors",
                     R"({"w": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}})", 2);
  EXPECT_THAT(error_of([&] { SafetensorsFile::open(p); }),
              AllOf(HasSubstr("dtype.safetensors: tensor 'w'"), HasSubstr("unknown dtype"),
                    HasSubstr("one of F64, F32"), HasSubstr("found 'F8_E4M3'")));
}

TEST_F(Safetensors, ShapeDisagreesWithByteCount) {
  const auto p = raw("shape.safetensors",
                     R"({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}})", 20);
  EXPECT_THAT(
      error_of([&] { SafetensorsFile::open(p); }),
      AllOf(HasSubstr("tensor 'w'"), HasSubstr("shape [2, 3] of F32"),
            HasSubstr("expected 6 elements x 4 bytes = 24 bytes"), HasSubstr("found 20 bytes")));
}

TEST_F(Safetensors, OffsetsOutOfRange) {
  const auto p = raw("range.safetensors",
                     R"({"w": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]}})", 4);
  EXPECT_THAT(error_of([&] { SafetensorsFile::open(p); }),
              AllOf(HasSubstr("tensor 'w'"), HasSubstr("data_offsets out of range"),
                    HasSubstr("within the 4 data bytes")));
}

TEST_F(Safetensors, OverlappingOffsets) {
  const auto p = raw("overlap.safetensors",
                     R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                         "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}})",
                     6);
  EXPECT_THAT(error_of([&] { SafetensorsFile::open(p); }),
              AllOf(HasSubstr("tensor 'b'"), HasSubstr("overlaps the previous tensor"),
                    HasSubstr("found 2")));
}

TEST_F(Safetensors, GapBetweenTensors) {
  const auto p = raw("gap.safetensors",
                     R"({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
                         "b": {"dtype": "U8", "shape": [2], "data_offsets": [4, 6]}})",
                     6);
  EXPECT_THAT(error_of([&] { SafetensorsFile::open(p); }),
              AllOf(HasSubstr("tensor 'b'"), HasSubstr("gap in the data section"),
                    HasSubstr("expected begin = 2")));
}

TEST_F(Safetensors, TrailingBytesNoTensorCovers) {
  const auto p = raw("trail.safetensors",
                     R"({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}})", 5);
  EXPECT_THAT(error_of([&] { SafetensorsFile::open(p); }),
              AllOf(HasSubstr("data section has bytes no tensor covers"), HasSubstr("found 5")));
}

TEST_F(Safetensors, DuplicateNames) {
  const auto p = raw("dup.safetensors",
                     R"({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
                         "a": {"dtype": "U8", "shape": [2], "data_offsets": [2, 4]}})",
                     4);
  EXPECT_THAT(error_of([&] { SafetensorsFile::open(p); }),
              AllOf(HasSubstr("dup.safetensors"), HasSubstr("duplicate tensor name 'a'")));
}

TEST_F(Safetensors, NegativeShapeAndBadFields) {
  const auto neg =
      raw("neg.safetensors", R"({"a": {"dtype": "U8", "shape": [-2], "data_offsets": [0, 2]}})", 2);
  EXPECT_THAT(error_of([&] { SafetensorsFile::open(neg); }),
              AllOf(HasSubstr("tensor 'a'"), HasSubstr("non-negative integer sizes")));
  const auto extra =
      raw("extra.safetensors",
          R"({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2], "strides": [1]}})", 2);
  EXPECT_THAT(error_of([&] { SafetensorsFile::open(extra); }),
              HasSubstr("unknown field 'strides'"));
  const auto meta = raw("meta.safetensors", R"({"__metadata__": {"step": 3}})", 0);
  EXPECT_THAT(error_of([&] { SafetensorsFile::open(meta); }),
              HasSubstr("__metadata__ 'step': expected a string"));
}

TEST_F(Safetensors, MissingFile) {
  EXPECT_THAT(
      error_of([&] { SafetensorsFile::open(path("none.safetensors")); }),
      AllOf(HasSubstr("none.safetensors"), HasSubstr("cannot open"), HasSubstr("No such file")));
}

TEST_F(Safetensors, IndexPointsAtMissingShard) {
  save_sharded(dir_.string(), {{"a", torch::ones(256)}, {"b", torch::ones(256)}}, 1024);
  fs::remove(path("model-00002-of-00002.safetensors"));
  EXPECT_THAT(
      error_of([&] { TensorStore::open(dir_.string()); }),
      AllOf(HasSubstr("model.safetensors.index.json"),
            HasSubstr("index points at a missing shard 'model-00002-of-00002.safetensors'")));
}

// An index names shard files of its own folder; one that leads elsewhere is refused even
// when the file it names exists and holds the tensor.
TEST_F(Safetensors, IndexMayNotLeaveItsFolder) {
  save_sharded(dir_.string(), {{"a", torch::ones(256)}, {"b", torch::ones(256)}}, 1024);
  const std::string index_path = path("model.safetensors.index.json");
  const auto original = nlohmann::json::parse(std::ifstream(index_path));
  const fs::path outside = dir_.parent_path() / (dir_.filename().string() + "_outside");
  fs::create_directories(outside);
  fs::copy_file(path("model-00002-of-00002.safetensors"), outside / "b.safetensors",
                fs::copy_options::overwrite_existing);
  for (const std::string& escape : {"../" + outside.filename().string() + "/b.safetensors",
                                    (outside / "b.safetensors").string(),
                                    std::string("sub/../model-00002-of-00002.safetensors")}) {
    SCOPED_TRACE(escape);
    auto index = original;
    index["weight_map"]["b"] = escape;
    std::ofstream(index_path) << index.dump();
    EXPECT_THAT(error_of([&] { TensorStore::open(dir_.string()); }),
                AllOf(HasSubstr("model.safetensors.index.json"), HasSubstr("weight_map['b']"),
                      HasSubstr("a shard file in this folder")));
  }
  std::ofstream(index_path) << original.dump();
  EXPECT_EQ(TensorStore::open(dir_.string()).names().size(), 2u);  // the bare names load
  fs::remove_all(outside);
}

TEST_F(Safetensors, IndexAndShardsDisagree) {
  // Shard 1 holds a and b, shard 2 holds c.
  save_sharded(dir_.string(),
               {{"a", torch::ones(256)}, {"b", torch::ones(256)}, {"c", torch::ones(256)}}, 2048);
  const std::string index_path = path("model.safetensors.index.json");
  auto index = nlohmann::json::parse(std::ifstream(index_path));
  index["weight_map"]["ghost"] = "model-00001-of-00002.safetensors";
  std::ofstream(index_path) << index.dump();
  EXPECT_THAT(error_of([&] { TensorStore::open(dir_.string()); }),
              AllOf(HasSubstr("tensor 'ghost' listed for shard 'model-00001-of-00002.safetensors'"),
                    HasSubstr("no such tensor there")));

  index["weight_map"].erase("ghost");
  index["weight_map"].erase("b");
  std::ofstream(index_path) << index.dump();
  EXPECT_THAT(error_of([&] { TensorStore::open(dir_.string()); }),
              AllOf(HasSubstr("model-00001-of-00002.safetensors"),
                    HasSubstr("tensor 'b' is not in the index")));
}

TEST_F(Safetensors, FolderWithoutCheckpoint) {
  EXPECT_THAT(error_of([&] { TensorStore::open(dir_.string()); }),
              AllOf(HasSubstr("no checkpoint in folder"),
                    HasSubstr("model.safetensors or model.safetensors.index.json")));
}

}  // namespace
}  // namespace vilau::io
