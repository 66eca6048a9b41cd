// Training on two Gloo ranks, each a child process of this test binary launched the way
// torchrun would: DDP and ZeRO-2 against one process on the same global batch, and a rank
// that dies making the other fail with a clear error instead of hanging.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "spawn_ranks.h"
#include "test_util.h"
#include "train_fixture.h"
#include "vilau/dist/process_group.h"
#include "vilau/train/trainer.h"

namespace vilau {
namespace {

// The child's part: VILAU_TRAIN_DIR holds the data; VILAU_TRAIN_ZERO the stage;
// VILAU_TRAIN_EXIT=1 makes rank 1 leave right after joining the group.
TEST(TrainDist, Worker) {
  const char* dir = std::getenv("VILAU_TRAIN_DIR");
  if (dir == nullptr) GTEST_SKIP() << "runs only as a child of the TrainDistributed tests";
  const DistEnv env = read_dist_env();
  const bool exit_early = std::getenv("VILAU_TRAIN_EXIT") != nullptr;
  const std::string zero = std::getenv("VILAU_TRAIN_ZERO");
  const Config config = testing::tiny_run(
      "pretrain", dir,
      {"train.max_steps=5", "data.batch_size=2", "train.distributed.zero_stage=" + zero,
       "train.distributed.timeout_s=" + std::string(exit_early ? "5" : "120"),
       "train.output_dir=" + std::string(dir) + "/run-zero" + zero});
  const ProcessGroup group(env, at::kCPU, std::chrono::seconds(exit_early ? 5 : 120));
  if (exit_early && env.rank == 1) std::_Exit(0);
  TrainOptions options;
  options.progress = false;
  const TrainSummary summary = train(config, to_yaml(config), group, options);
  std::ofstream(std::string(dir) + "/losses-zero" + zero + "-rank" + std::to_string(env.rank) +
                ".json")
      << nlohmann::json(summary.losses).dump();
}

class TrainDistributed : public testing::TempDirTest {
 protected:
  void SetUp() override {
    if (std::getenv("VILAU_TRAIN_DIR")) GTEST_SKIP() << "a worker runs only the Worker test";
    TempDirTest::SetUp();
    testing::write_training_set(dir_.string());
  }

  std::vector<double> two_ranks(const std::string& zero) {
    const auto ranks = testing::spawn_ranks(
        "TrainDist.Worker", 2, {"VILAU_TRAIN_DIR=" + dir_.string(), "VILAU_TRAIN_ZERO=" + zero},
        dir_.string(), std::chrono::seconds(240));
    for (const auto& r : ranks) {
      EXPECT_TRUE(r.exited && r.code == 0) << r.log;
    }
    std::vector<double> losses;
    nlohmann::json::parse(std::ifstream(path("losses-zero" + zero + "-rank0.json"))).get_to(losses);
    return losses;
  }

  std::vector<double> one_process() {
    const ProcessGroup single(DistEnv{}, at::kCPU, std::chrono::seconds(30));
    const Config config = testing::tiny_run(
        "pretrain", dir_.string(),
        {"train.max_steps=5", "data.batch_size=4", "train.output_dir=" + path("single")});
    TrainOptions options;
    options.progress = false;
    return train(config, to_yaml(config), single, options).losses;
  }
};

TEST_F(TrainDistributed, DdpAndZeroOnTwoRanksEqualOneProcess) {
  const std::vector<double> single = one_process();
  const std::vector<double> ddp = two_ranks("0");
  const std::vector<double> zero1 = two_ranks("1");
  const std::vector<double> zero2 = two_ranks("2");
  ASSERT_EQ(ddp.size(), 5u);
  ASSERT_EQ(zero1.size(), 5u);
  ASSERT_EQ(zero2.size(), 5u);
  for (size_t i = 0; i < single.size(); ++i) {
    EXPECT_NEAR(ddp[i], single[i], 1e-5 * std::abs(single[i])) << "DDP step " << i;
    EXPECT_NEAR(zero1[i], ddp[i], 1e-5 * std::abs(ddp[i])) << "ZeRO-1 step " << i;
    EXPECT_NEAR(zero2[i], ddp[i], 1e-5 * std::abs(ddp[i])) << "ZeRO-2 step " << i;
  }
}

TEST_F(TrainDistributed, ARankThatExitsMakesTheOtherFailClearly) {
  const auto start = std::chrono::steady_clock::now();
  const auto ranks = testing::spawn_ranks(
      "TrainDist.Worker", 2,
      {"VILAU_TRAIN_DIR=" + dir_.string(), "VILAU_TRAIN_ZERO=0", "VILAU_TRAIN_EXIT=1"},
      dir_.string(), std::chrono::seconds(90));
  ASSERT_TRUE(ranks[0].exited) << "rank 0 hung: " << ranks[0].log;
  EXPECT_NE(ranks[0].code, 0);
  EXPECT_THAT(ranks[0].log, ::testing::HasSubstr("rank 0 of 2"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(60));
}

}  // namespace
}  // namespace vilau
