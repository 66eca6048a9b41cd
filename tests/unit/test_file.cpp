// Reading files safely (core/file): FIFOs, devices, directories and oversized files are
// refused by name before anything is read, and the readers built on it inherit that.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "test_util.h"
#include "vilau/config.h"
#include "vilau/core/error.h"
#include "vilau/core/file.h"
#include "vilau/data/tar_reader.h"
#include "vilau/data/video.h"
#include "vilau/io/json_file.h"
#include "vilau/io/safetensors.h"

namespace vilau {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using vilau::testing::error_of;

using Files = vilau::testing::TempDirTest;

TEST_F(Files, RefusesWhatIsNotARegularFileByName) {
  const std::string fifo = (dir_ / "config.yaml").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  // Each would block forever or read without end; each is refused before it is opened.
  for (const std::string& path : {fifo, std::string("/dev/zero"), dir_.string()}) {
    SCOPED_TRACE(path);
    EXPECT_THAT(error_of<IoError>([&] { read_regular_file(path, "a test config"); }),
                AllOf(HasSubstr(path), HasSubstr("a test config")));
    EXPECT_THAT(error_of<IoError>([&] { io::read_json_file(path, "a model config"); }),
                HasSubstr(path));
  }
  EXPECT_THAT(error_of<IoError>([&] { read_regular_file(fifo, "x"); }), HasSubstr("FIFO"));
  // Tar shards and videos are streamed by libarchive and OpenCV: checked before they start.
  EXPECT_THAT(error_of<IoError>([&] { data::read_tar_member(fifo, 0); }),
              AllOf(HasSubstr(fifo), HasSubstr("tar shard")));
  EXPECT_THAT(error_of<IoError>([&] { data::read_video_frames(fifo, 8); }),
              AllOf(HasSubstr(fifo), HasSubstr("FIFO")));
  // Checkpoints are mapped, not read: the FIFO is opened without waiting, then refused.
  EXPECT_THAT(error_of<IoError>([&] { io::SafetensorsFile::open(fifo); }),
              AllOf(HasSubstr(fifo), HasSubstr("FIFO")));
  EXPECT_THAT(error_of<IoError>([&] { read_regular_file(dir_.string(), "x"); }),
              HasSubstr("a directory"));
  EXPECT_THAT(error_of<IoError>([&] { read_regular_file((dir_ / "none").string(), "x"); }),
              HasSubstr("no such file"));
}

TEST_F(Files, RefusesOversizedFilesBeforeReadingThem) {
  const fs::path big = dir_ / "big.json";
  std::ofstream(big) << "{}";
  fs::resize_file(big, kMaxConfigBytes + 1);  // sparse: nothing is written
  EXPECT_THAT(error_of<FormatError>([&] { io::read_json_file(big.string(), "a model config"); }),
              AllOf(HasSubstr("big.json"), HasSubstr("too large")));
  // A symlink to a regular file is followed and read.
  const fs::path real = dir_ / "real.json", link = dir_ / "link.json";
  std::ofstream(real) << R"({"a": 1})";
  fs::create_symlink(real, link);
  EXPECT_EQ(io::read_json_file(link.string(), "x").at("a"), 1);
  EXPECT_EQ(read_regular_file(real.string(), "x", 100), R"({"a": 1})");
}

TEST_F(Files, ConfigsAndTheirDefaultsMustBeRegularFiles) {
  const fs::path fifo = dir_ / "parent.yaml";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const fs::path child = dir_ / "child.yaml";
  std::ofstream(child) << "defaults: parent.yaml\n";
  EXPECT_THAT(error_of<IoError>([&] { load_run_config(child.string()); }),
              AllOf(HasSubstr("parent.yaml"), HasSubstr("FIFO"), HasSubstr("defaults")));
  EXPECT_THAT(error_of<IoError>([&] { load_run_config("/dev/urandom"); }),
              HasSubstr("/dev/urandom"));
}

// A "billion laughs": nine lines that expand to 10^9 nodes through aliases, and a document
// nested deeper than any config. Both are refused by name, at once, without the memory.
TEST_F(Files, YamlAliasBombsAndDeepNestingAreRefused) {
  const fs::path bomb = dir_ / "bomb.yaml";
  {
    std::ofstream out(bomb);
    out << "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
    for (char c = 'b'; c <= 'i'; ++c) {
      out << c << ": &" << c << " [";
      for (int i = 0; i < 10; ++i) out << (i ? ", *" : "*") << static_cast<char>(c - 1);
      out << "]\n";
    }
  }
  EXPECT_THAT(error_of<ConfigError>([&] { load_run_config(bomb.string()); }),
              AllOf(HasSubstr("bomb.yaml"), HasSubstr("too large"), HasSubstr("aliases")));
  const fs::path deep = dir_ / "deep.yaml";
  std::ofstream(deep) << "model: " << std::string(250, '[') << std::string(250, ']') << "\n";
  EXPECT_THAT(error_of<ConfigError>([&] { load_run_config(deep.string()); }),
              AllOf(HasSubstr("deep.yaml"), HasSubstr("nesting")));
}

}  // namespace
}  // namespace vilau
