// Training checkpoints: round trips, `latest`, retention, crash leftovers, and each error.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "test_util.h"
#include "vilau/core/error.h"
#include "vilau/io/training_checkpoint.h"

namespace vilau::io {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using vilau::testing::error_of;
using vilau::testing::expect_bitwise_equal;

class TrainingCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("vilau_ckpt_" +
             std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(root_);
  }
  void TearDown() override { fs::remove_all(root_); }
  std::string path(const std::string& name) const { return (root_ / name).string(); }

  // What is in the root, sorted.
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    for (const auto& entry : fs::directory_iterator(root_)) {
      out.push_back(entry.path().filename().string());
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  fs::path root_;
};

TrainingState make_state(int64_t step, float fill = 1.0f) {
  TrainingState state;
  state.step = step;
  state.model = {{"embed.weight", torch::full({4, 3}, fill)},
                 {"norm.weight", torch::full({3}, fill, torch::kBFloat16)}};
  state.optimizer = {{"exp_avg.embed.weight", torch::full({4, 3}, fill / 10)},
                     {"step.embed.weight", torch::tensor(step)}};
  state.scheduler = {{"last_epoch", step}};
  state.data = {{"sample", step * 8}};
  state.config_yaml = "train:\n  step: " + std::to_string(step) + "\n";
  return state;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_file(const std::string& path, const std::string& contents) {
  std::ofstream(path, std::ios::binary) << contents;
}

void expect_same_tensors(const NamedTensors& actual, const NamedTensors& expected) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    SCOPED_TRACE(expected[i].first);
    EXPECT_EQ(actual[i].first, expected[i].first);  // the saved order comes back
    expect_bitwise_equal(actual[i].second, expected[i].second);
  }
}

TEST_F(TrainingCheckpoint, RoundTripsEveryFieldBitExact) {
  torch::manual_seed(3);
  TrainingState state;
  state.step = 1234;
  const at::Tensor w = torch::randn({5, 7});
  state.model = {{"z.weight", w},  // not in name order: the order must survive
                 {"a.bf16", w.to(torch::kBFloat16)},
                 {"m.half", w.to(torch::kHalf).t()},
                 {"nan", torch::full({2}, std::numeric_limits<float>::quiet_NaN())},
                 {"count", torch::randint(-1000, 1000, {3}, torch::kLong)},
                 {"mask", torch::rand({4}) > 0.5}};
  state.optimizer = {{"exp_avg.z.weight", torch::randn({5, 7}).to(torch::kBFloat16)},
                     {"exp_avg_sq.z.weight", torch::rand({5, 7})},
                     {"step.z.weight", torch::tensor(int64_t{1234})}};
  state.rng = capture_rng_states();
  state.scheduler = {{"name", "cosine"}, {"base_lr", 3e-4}, {"last_lr", 0.1 + 0.2}};
  state.data = {{"epoch", 2}, {"sample_index", 9007199254740993LL}, {"seed", 42u}};
  state.config_yaml = "model:\n  name: vilau-7b  # ü\n\ttabbed: true\n";

  CheckpointManager manager(root_.string());
  const std::string folder = manager.save(state);
  EXPECT_EQ(folder, path("step-00001234"));
  EXPECT_THAT(entries(), ElementsAre("latest", "step-00001234"));
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(folder)) {
    files.push_back(entry.path().filename().string());
  }
  std::sort(files.begin(), files.end());
  EXPECT_THAT(files, ElementsAre("config.yaml", "model.safetensors", "optimizer.safetensors",
                                 "rng.safetensors", "trainer_state.json"));
  const auto meta = nlohmann::json::parse(read_file(folder + "/trainer_state.json"));
  EXPECT_EQ(meta["format"], "vilau-training-checkpoint");
  EXPECT_EQ(meta["version"], 1);
  EXPECT_EQ(meta["step"], 1234);

  const TrainingState loaded = manager.load(folder);
  EXPECT_EQ(loaded.step, 1234);
  expect_same_tensors(loaded.model, state.model);
  expect_same_tensors(loaded.optimizer, state.optimizer);
  expect_same_tensors(loaded.rng, state.rng);
  EXPECT_EQ(loaded.scheduler, state.scheduler);
  EXPECT_EQ(loaded.scheduler["last_lr"].get<double>(), 0.1 + 0.2);  // every bit of a double
  EXPECT_EQ(loaded.data, state.data);
  EXPECT_EQ(loaded.config_yaml, state.config_yaml);

  // Optimizer state is owned, so that an optimizer can update it in place.
  loaded.optimizer[1].second.add_(1.0);
  EXPECT_TRUE(torch::equal(loaded.optimizer[1].second, state.optimizer[1].second + 1.0));
}

TEST_F(TrainingCheckpoint, LatestFollowsTheNewestSave) {
  CheckpointManager manager(root_.string());
  EXPECT_EQ(manager.latest(), std::nullopt);
  EXPECT_FALSE(manager.load_latest().has_value());

  manager.save(make_state(100));
  EXPECT_EQ(manager.latest(), path("step-00000100"));
  manager.save(make_state(200, 2.0f));
  EXPECT_EQ(manager.latest(), path("step-00000200"));
  EXPECT_EQ(read_file(path("latest")), "step-00000200\n");

  const std::optional<TrainingState> loaded = manager.load_latest();
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->step, 200);
  EXPECT_EQ(loaded->model[0].second[0][0].item<float>(), 2.0f);
  EXPECT_EQ(loaded->data["sample"], 1600);
}

TEST_F(TrainingCheckpoint, RetentionKeepsExactlyKeepLastNewest) {
  CheckpointManager manager(root_.string(), /*keep_last=*/2);
  for (int64_t step = 1; step <= 5; ++step) {
    manager.save(make_state(step * 10));
  }
  EXPECT_THAT(entries(), ElementsAre("latest", "step-00000040", "step-00000050"));
  EXPECT_EQ(manager.load(path("step-00000040")).step, 40);

  CheckpointManager keep_all((root_ / "all").string(), /*keep_last=*/0);
  for (int64_t step = 1; step <= 4; ++step) {
    keep_all.save(make_state(step));
  }
  EXPECT_EQ(std::distance(fs::directory_iterator(root_ / "all"), fs::directory_iterator()), 5);
}

TEST_F(TrainingCheckpoint, RetentionNeverDeletesTheCheckpointLatestNames) {
  CheckpointManager manager(root_.string(), /*keep_last=*/2);
  manager.save(make_state(100));
  manager.save(make_state(300));
  // A run resumed from an earlier step: its checkpoint is the newest one, whatever its step.
  manager.save(make_state(150));
  EXPECT_EQ(manager.latest(), path("step-00000150"));
  EXPECT_THAT(entries(), ElementsAre("latest", "step-00000150", "step-00000300"));

  CheckpointManager keep_one(root_.string(), /*keep_last=*/1);
  keep_one.save(make_state(120));
  EXPECT_THAT(entries(), ElementsAre("latest", "step-00000120"));
}

TEST_F(TrainingCheckpoint, CrashBeforeTheRenameLeavesThePreviousCheckpointLoadable) {
  CheckpointManager manager(root_.string());
  manager.save(make_state(100));
  // What a save of step 200 killed midway leaves: a partial temporary folder, and the
  // temporary of a `latest` rewrite that never got renamed.
  const fs::path tmp = root_ / ".tmp-step-00000200-99999";
  fs::create_directories(tmp);
  write_file((tmp / "model.safetensors").string(), "partial");
  write_file((tmp / "trainer_state.json").string(), R"({"format": "vilau-training-ch)");
  write_file(path("latest.tmp.99999"), "step-000");

  EXPECT_EQ(manager.latest(), path("step-00000100"));
  const std::optional<TrainingState> loaded = manager.load_latest();
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->step, 100);
  expect_same_tensors(loaded->model, make_state(100).model);

  // The next save removes the leftovers.
  manager.save(make_state(200));
  EXPECT_THAT(entries(), ElementsAre("latest", "step-00000100", "step-00000200"));
  EXPECT_EQ(manager.load_latest()->step, 200);
}

TEST_F(TrainingCheckpoint, FailedSaveLeavesThePreviousCheckpointAndLatestIntact) {
  CheckpointManager manager(root_.string());
  manager.save(make_state(100));
  TrainingState bad = make_state(200);
  // The model is written, then the optimizer file fails.
  bad.optimizer.emplace_back("complex", torch::ones({2}, torch::kComplexFloat));
  EXPECT_THAT(error_of<FormatError>([&] { manager.save(bad); }),
              HasSubstr("unsupported tensor dtype"));
  EXPECT_THAT(entries(), ElementsAre("latest", "step-00000100"));  // no temporary either
  EXPECT_EQ(manager.load_latest()->step, 100);
}

TEST_F(TrainingCheckpoint, SavingTheSameStepTwiceReplacesIt) {
  CheckpointManager manager(root_.string(), /*keep_last=*/3, /*max_shard_bytes=*/16);
  TrainingState first = make_state(100, 1.0f);
  manager.save(first);  // sharded: 48 bytes of weights over a 16-byte limit
  ASSERT_TRUE(fs::exists(path("step-00000100/model.safetensors.index.json")));

  CheckpointManager unsharded(root_.string());
  TrainingState second = make_state(100, 2.0f);
  second.config_yaml = "replaced: true\n";
  EXPECT_EQ(unsharded.save(second), path("step-00000100"));
  EXPECT_THAT(entries(), ElementsAre("latest", "step-00000100"));
  EXPECT_FALSE(fs::exists(path("step-00000100/model.safetensors.index.json")));

  const TrainingState loaded = unsharded.load(path("step-00000100"));
  expect_same_tensors(loaded.model, second.model);
  expect_same_tensors(loaded.optimizer, second.optimizer);
  EXPECT_EQ(loaded.config_yaml, "replaced: true\n");
}

TEST_F(TrainingCheckpoint, ShardedModelWeightsRoundTrip) {
  TrainingState state = make_state(7);
  state.model.clear();
  for (int i = 4; i >= 0; --i) {
    state.model.emplace_back("layers." + std::to_string(i) + ".weight",
                             torch::randn({512}).to(torch::kBFloat16));  // 1 KiB each
  }
  CheckpointManager manager(root_.string(), 3, /*max_shard_bytes=*/2560);
  const std::string folder = manager.save(state);
  EXPECT_TRUE(fs::exists(folder + "/model-00003-of-00003.safetensors"));
  EXPECT_TRUE(fs::exists(folder + "/model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(folder + "/model.safetensors"));
  expect_same_tensors(manager.load(folder).model, state.model);
}

// --- errors: each names the folder or file and what was expected ----------------------

TEST_F(TrainingCheckpoint, LoadOfAMissingFolder) {
  CheckpointManager manager(root_.string());
  EXPECT_THAT(error_of<IoError>([&] { manager.load(path("step-00000001")); }),
              AllOf(HasSubstr(path("step-00000001")), HasSubstr("cannot load training checkpoint"),
                    HasSubstr("expected a checkpoint folder, found no such folder")));
}

TEST_F(TrainingCheckpoint, LoadWithoutTrainerState) {
  CheckpointManager manager(root_.string());
  const std::string folder = manager.save(make_state(1));
  fs::remove(folder + "/trainer_state.json");
  EXPECT_THAT(error_of<IoError>([&] { manager.load(folder); }),
              AllOf(HasSubstr(folder + "/trainer_state.json: cannot open"),
                    HasSubstr("found no such file")));
}

TEST_F(TrainingCheckpoint, LoadOfAnotherFormatOrVersion) {
  CheckpointManager manager(root_.string());
  const std::string folder = manager.save(make_state(1));
  const std::string state_path = folder + "/trainer_state.json";
  auto meta = nlohmann::json::parse(read_file(state_path));

  meta["format"] = "hf-trainer";
  write_file(state_path, meta.dump());
  EXPECT_THAT(
      error_of<FormatError>([&] { manager.load(folder); }),
      AllOf(
          HasSubstr(state_path), HasSubstr("not a training checkpoint"),
          HasSubstr(
              R"(expected "format": "vilau-training-checkpoint", found "format": "hf-trainer")")));

  meta["format"] = "vilau-training-checkpoint";
  meta["version"] = 2;
  write_file(state_path, meta.dump());
  EXPECT_THAT(
      error_of<FormatError>([&] { manager.load(folder); }),
      AllOf(HasSubstr(state_path), HasSubstr("unsupported \"version\": expected 1, found 2")));

  meta.erase("version");
  write_file(state_path, meta.dump());
  EXPECT_THAT(error_of<FormatError>([&] { manager.load(folder); }),
              HasSubstr("missing \"version\""));

  write_file(state_path, "{\"format\": ");
  EXPECT_THAT(error_of<FormatError>([&] { manager.load(folder); }),
              AllOf(HasSubstr(state_path), HasSubstr("invalid JSON")));
}

TEST_F(TrainingCheckpoint, LatestNamingAMissingOrInvalidFolder) {
  CheckpointManager manager(root_.string());
  manager.save(make_state(1));
  fs::remove_all(path("step-00000001"));
  EXPECT_THAT(error_of<IoError>([&] { manager.load_latest(); }),
              AllOf(HasSubstr(path("latest") + ": names a missing checkpoint"),
                    HasSubstr("expected the folder " + path("step-00000001")),
                    HasSubstr("found no such folder")));

  write_file(path("latest"), "../elsewhere\n");
  EXPECT_THAT(error_of<FormatError>([&] { manager.latest(); }),
              AllOf(HasSubstr(path("latest")), HasSubstr("invalid checkpoint name"),
                    HasSubstr("found '../elsewhere'")));
}

TEST_F(TrainingCheckpoint, LoadWithAMissingWeightsFile) {
  CheckpointManager manager(root_.string());
  const std::string folder = manager.save(make_state(1));
  fs::rename(folder + "/optimizer.safetensors", path("optimizer.bak"));
  EXPECT_THAT(error_of<IoError>([&] { manager.load(folder); }),
              AllOf(HasSubstr(folder + "/optimizer.safetensors: missing checkpoint file"),
                    HasSubstr("expected the optimizer state, found no such file")));

  fs::rename(path("optimizer.bak"), folder + "/optimizer.safetensors");
  fs::remove(folder + "/model.safetensors");
  EXPECT_THAT(error_of<IoError>([&] { manager.load(folder); }),
              AllOf(HasSubstr(folder), HasSubstr("expected model.safetensors")));

  manager.save(make_state(2));
  fs::remove(path("step-00000002/rng.safetensors"));
  EXPECT_THAT(error_of<IoError>([&] { manager.load_latest(); }),
              HasSubstr("rng.safetensors: missing checkpoint file"));
}

TEST_F(TrainingCheckpoint, SaveRejectsANegativeStep) {
  CheckpointManager manager(root_.string());
  EXPECT_THAT(error_of<Error>([&] { manager.save(make_state(-1)); }),
              HasSubstr("expected a step >= 0, found -1"));
}

// --- random number generators ---------------------------------------------------------

TEST_F(TrainingCheckpoint, RngRestoreReproducesRandomNumbers) {
  torch::manual_seed(11);
  torch::randn({3});  // leaves a cached normal sample in the generator state
  const NamedTensors states = capture_rng_states();
  ASSERT_FALSE(states.empty());
  EXPECT_EQ(states[0].first, "cpu");
  EXPECT_EQ(states[0].second.scalar_type(), torch::kByte);
  const at::Tensor uniform = torch::rand({8});
  const at::Tensor normal = torch::randn({5});

  // Through a checkpoint on disk, after the generator has moved on.
  TrainingState state = make_state(5);
  state.rng = states;
  CheckpointManager manager(root_.string());
  manager.save(state);
  torch::manual_seed(12345);
  torch::rand({100});
  restore_rng_states(manager.load_latest()->rng);
  expect_bitwise_equal(torch::rand({8}), uniform);
  expect_bitwise_equal(torch::randn({5}), normal);
  EXPECT_FALSE(torch::equal(torch::rand({8}), uniform));
}

TEST_F(TrainingCheckpoint, RngRestoreRejectsWhatItCannotMap) {
  const NamedTensors cpu = capture_rng_states();
  const at::Tensor after = torch::rand({4});

  EXPECT_THAT(error_of<FormatError>([&] {
                restore_rng_states({{"tpu", cpu[0].second}});
              }),
              AllOf(HasSubstr("rng state 'tpu': unknown generator"),
                    HasSubstr(R"(expected "cpu" or "cuda:<index>", found 'tpu')")));
  EXPECT_THAT(
      error_of<DeviceError>([&] {
        restore_rng_states({{"cuda:999", cpu[0].second}});
      }),
      AllOf(HasSubstr("rng state 'cuda:999': no such CUDA device"), HasSubstr("found 999")));
  EXPECT_THAT(error_of<FormatError>([&] {
                restore_rng_states({{"cpu", torch::zeros({4}, torch::kFloat)}});
              }),
              HasSubstr("expected a 1-D uint8 tensor, found Float"));
  EXPECT_THAT(error_of<FormatError>([&] {
                restore_rng_states({{"cpu", torch::zeros({3}, torch::kByte)}});
              }),
              HasSubstr("rng state 'cpu': cannot restore"));

  // A bad entry after a good one restores nothing.
  torch::manual_seed(99);
  const at::Tensor unrelated = torch::rand({4});
  torch::manual_seed(99);
  EXPECT_THROW(restore_rng_states({{"cpu", cpu[0].second}, {"tpu", cpu[0].second}}), FormatError);
  expect_bitwise_equal(torch::rand({4}), unrelated);
  restore_rng_states(cpu);
  expect_bitwise_equal(torch::rand({4}), after);
}

}  // namespace
}  // namespace vilau::io
