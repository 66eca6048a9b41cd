// The training engine on one process: every stage learns, accumulation, resuming, falling
// back from a broken checkpoint, frozen modules, NaN handling; tiny configs on the CPU.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <numeric>

#include "test_util.h"
#include "train_fixture.h"
#include "vilau/core/error.h"
#include "vilau/dist/process_group.h"
#include "vilau/model/init.h"
#include "vilau/model/official_checkpoint.h"
#include "vilau/train/optimizer.h"
#include "vilau/train/parallel_optimizer.h"
#include "vilau/train/trainer.h"

namespace vilau {
namespace {

namespace fs = std::filesystem;

const ProcessGroup& single() {
  static const ProcessGroup group(DistEnv{}, at::kCPU, std::chrono::seconds(30));
  return group;
}

TrainSummary run(const Config& config, int64_t stop_after = -1) {
  TrainOptions options;
  options.progress = false;
  options.stop_after_step = stop_after;
  return train(config, to_yaml(config), single(), options);
}

double mean(const std::vector<double>& v, size_t from, size_t to) {
  return std::accumulate(v.begin() + from, v.begin() + to, 0.0) / static_cast<double>(to - from);
}

TEST(CosineSchedule, WarmsUpThenDecaysToTheFloor) {
  EXPECT_EQ(cosine_lr_factor(0, 100, 0.1, 0.0), 0.0);
  EXPECT_DOUBLE_EQ(cosine_lr_factor(5, 100, 0.1, 0.0), 0.5);
  EXPECT_DOUBLE_EQ(cosine_lr_factor(10, 100, 0.1, 0.0), 1.0);
  EXPECT_NEAR(cosine_lr_factor(55, 100, 0.1, 0.0), 0.5, 1e-12);
  EXPECT_NEAR(cosine_lr_factor(100, 100, 0.1, 0.1), 0.1, 1e-12);
}

// Our AdamW (fused kernel, flat master weights) against LibTorch's reference AdamW.
TEST(ParallelOptimizerTest, MatchesTorchAdamWAndSkipsNonFiniteSteps) {
  torch::manual_seed(0);
  torch::nn::Linear ours(4, 3), reference(4, 3);
  reference->weight.data().copy_(ours->weight.data());
  reference->bias.data().copy_(ours->bias.data());
  OptimizerConfig config;
  config.lr = 0.1;
  config.weight_decay = 0.01;
  config.grad_clip = 0;
  ParallelOptimizer optimizer({{"llm.weight", ours->weight}, {"llm.bias", ours->bias}}, config,
                              DistributedConfig{}, single(), at::kCPU);
  // Biases are not decayed: two parameter groups in the reference as well.
  torch::optim::AdamW adamw(
      {torch::optim::OptimizerParamGroup({reference->weight},
                                         std::make_unique<torch::optim::AdamWOptions>(
                                             torch::optim::AdamWOptions(0.1).weight_decay(0.01))),
       torch::optim::OptimizerParamGroup({reference->bias},
                                         std::make_unique<torch::optim::AdamWOptions>(
                                             torch::optim::AdamWOptions(0.1).weight_decay(0.0)))});
  for (int step = 0; step < 4; ++step) {
    const at::Tensor x = torch::randn({5, 4});
    optimizer.backward(ours->forward(x).square().sum(), true);
    const auto result = optimizer.step(1.0, true);
    EXPECT_FALSE(result.skipped);
    adamw.zero_grad();
    reference->forward(x).square().sum().backward();
    adamw.step();
    EXPECT_LE(testing::relative_error(ours->weight, reference->weight), 1e-6) << step;
    EXPECT_LE(testing::relative_error(ours->bias, reference->bias), 1e-6) << step;
  }
  const at::Tensor before = ours->weight.detach().clone();
  optimizer.backward(ours->forward(torch::randn({5, 4})).sum() * std::nan(""), true);
  EXPECT_TRUE(optimizer.step(1.0, true).skipped);
  testing::expect_bitwise_equal(ours->weight.detach(), before);
}

class TrainTiny : public testing::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    testing::write_training_set(dir_.string());
  }
};

class TrainStage : public TrainTiny, public ::testing::WithParamInterface<std::string> {};

TEST_P(TrainStage, LossGoesDown) {
  std::vector<std::string> overrides = {"train.max_steps=24"};
  if (GetParam() == "finetune") {
    // From a model folder, as users fine-tune an official checkpoint.
    const Config base = testing::tiny_run("pretrain", dir_.string());
    export_official(path("init"), *base.model, init_weights(*base.model, 1));
    for (const char* file : {"tokenizer.model", "added_tokens.json", "tokenizer_config.json",
                             "special_tokens_map.json"}) {
      fs::copy_file(fs::path(VILAU_TEST_DATA_DIR "/tokenizer") / file,
                    fs::path(path("init")) / "llm" / file);
    }
    overrides.push_back("train.stage=finetune");
    overrides.push_back("train.init=" + path("init"));
  }
  const TrainSummary s = run(testing::tiny_run(GetParam(), dir_.string(), overrides));
  ASSERT_EQ(s.losses.size(), 24u);
  EXPECT_LT(mean(s.losses, 20, 24), 0.8 * mean(s.losses, 0, 4));
  EXPECT_EQ(s.skipped_steps, 0);
  // The export is a model folder the next stage (or vilau chat) can open.
  const OfficialCheckpoint exported = OfficialCheckpoint::open(s.export_dir);
  EXPECT_TRUE(exported.check().ok()) << exported.check().summary();
  EXPECT_TRUE(fs::exists(path("run/metrics.jsonl")));
  EXPECT_TRUE(fs::exists(path("run/config.yaml")));
}

INSTANTIATE_TEST_SUITE_P(Stages, TrainStage,
                         ::testing::Values("tower", "pretrain", "sft", "finetune"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

TEST_F(TrainTiny, TwoMicroBatchesOfHalfEqualOneBatch) {
  const TrainSummary one = run(testing::tiny_run(
      "pretrain", dir_.string(),
      {"train.max_steps=5", "data.batch_size=4", "train.output_dir=" + path("one")}));
  const TrainSummary two =
      run(testing::tiny_run("pretrain", dir_.string(),
                            {"train.max_steps=5", "data.batch_size=2", "train.grad_accum=2",
                             "train.output_dir=" + path("two")}));
  ASSERT_EQ(one.losses.size(), two.losses.size());
  for (size_t i = 0; i < one.losses.size(); ++i) {
    EXPECT_NEAR(one.losses[i], two.losses[i], 1e-5 * std::abs(one.losses[i])) << "step " << i;
  }
}

TEST_F(TrainTiny, PackedRowsTrain) {
  const TrainSummary s = run(testing::tiny_run(
      "pretrain", dir_.string(),
      {"train.max_steps=16", "data.packing=true", "data.max_length=300", "data.batch_size=2"}));
  ASSERT_EQ(s.losses.size(), 16u);
  EXPECT_LT(mean(s.losses, 12, 16), 0.8 * mean(s.losses, 0, 4));
}

TEST_F(TrainTiny, KilledAndResumedRunFollowsTheSameLossCurve) {
  const auto config = [this](const std::string& out) {
    return testing::tiny_run(
        "pretrain", dir_.string(),
        {"train.max_steps=8", "train.save_every=3", "train.output_dir=" + path(out)});
  };
  const TrainSummary whole = run(config("whole"));
  const TrainSummary killed = run(config("resumed"), 5);
  EXPECT_EQ(killed.last_step, 5);
  const TrainSummary resumed = run(config("resumed"));
  EXPECT_EQ(resumed.first_step, 3);  // the last checkpoint before the kill
  EXPECT_THAT(resumed.resumed_from, ::testing::EndsWith("step-00000003"));
  ASSERT_EQ(resumed.losses.size(), 5u);
  for (size_t i = 0; i < resumed.losses.size(); ++i) {
    EXPECT_EQ(resumed.losses[i], whole.losses[3 + i]) << "step " << 3 + i;
  }
}

TEST_F(TrainTiny, CorruptLatestCheckpointFallsBackToThePreviousOne) {
  const auto config = [this](int64_t steps) {
    return testing::tiny_run("pretrain", dir_.string(),
                             {"train.max_steps=" + std::to_string(steps), "train.save_every=2"});
  };
  run(config(4));
  const fs::path latest = path("run/checkpoints/step-00000004/model.safetensors");
  ASSERT_TRUE(fs::exists(latest));
  fs::resize_file(latest, fs::file_size(latest) / 2);
  const TrainSummary resumed = run(config(6));
  EXPECT_THAT(resumed.resumed_from, ::testing::EndsWith("step-00000002"));
  EXPECT_EQ(resumed.first_step, 2);
  EXPECT_EQ(resumed.losses.size(), 4u);
}

TEST_F(TrainTiny, FrozenModulesStayBitIdentical) {
  const Config base = testing::tiny_run("pretrain", dir_.string());
  const auto initial = init_weights(*base.model, 5);
  export_official(path("init"), *base.model, initial);
  const TrainSummary s =
      run(testing::tiny_run("pretrain", dir_.string(),
                            {"train.max_steps=3", "train.init=" + path("init"),
                             "train.trainable=[mm_projector]", "train.optimizer.warmup_ratio=0"}));
  const auto trained = OfficialCheckpoint::open(s.export_dir).load_all();
  int64_t changed = 0;
  for (const auto& [name, t] : initial) {
    ASSERT_TRUE(trained.count(name)) << name;
    const bool same = trained.at(name).equal(t);
    if (name.rfind("mm_projector.", 0) == 0) {
      changed += same ? 0 : 1;
    } else {
      EXPECT_TRUE(same) << name << " is frozen but changed";
    }
  }
  EXPECT_GT(changed, 0);
}

TEST_F(TrainTiny, NonFiniteStepsAreSkippedThenAbort) {
  // An absurd learning rate blows the weights up after the first update; every later
  // step is non-finite and skipped until the limit.
  const Config config = testing::tiny_run(
      "pretrain", dir_.string(),
      {"train.max_steps=10", "train.optimizer.lr=1e30", "train.optimizer.warmup_ratio=0",
       "train.optimizer.grad_clip=0", "train.max_skipped_steps=2"});
  EXPECT_THAT(testing::error_of<Error>([&] { run(config); }), ::testing::HasSubstr("NaN/Inf"));
}

TEST_F(TrainTiny, BadConfigsNameTheKey) {
  EXPECT_THAT(testing::error_of<ConfigError>(
                  [&] { testing::tiny_run("pretrain", dir_.string(), {"train.stage=warmup"}); }),
              ::testing::HasSubstr("train.stage"));
  EXPECT_THAT(testing::error_of<ConfigError>([&] {
                testing::tiny_run("pretrain", dir_.string(), {"train.trainable=[vision_tower]"});
              }),
              ::testing::HasSubstr("train.trainable"));
  EXPECT_THAT(testing::error_of<ConfigError>([&] {
                run(testing::tiny_run("pretrain", dir_.string(), {"data.image_size=64"}));
              }),
              ::testing::HasSubstr("data.image_size"));
}

}  // namespace
}  // namespace vilau
