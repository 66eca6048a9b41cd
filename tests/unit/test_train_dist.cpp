// Data-parallel training on Gloo ranks, each a child process of this test binary launched
// the way torchrun would, against one process on the same global batch: losses, gradient
// norms and the weights after several steps, on 2 and 4 ranks at ZeRO 0, 1 and 2, with and
// without gradient accumulation; gradient collectives launched while backward runs; killed
// runs that resume exactly; checkpoints that resume on another world size and ZeRO stage;
// and a rank that dies making the others fail clearly instead of hanging.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "spawn_ranks.h"
#include "test_util.h"
#include "train_fixture.h"
#include "vilau/dist/process_group.h"
#include "vilau/model/official_checkpoint.h"
#include "vilau/train/parallel_optimizer.h"
#include "vilau/train/trainer.h"

namespace vilau {
namespace {

namespace fs = std::filesystem;

// One training run; the worker reads it from VILAU_TRAIN_SPEC.
struct RunSpec {
  std::string name;  // its folder under the test's folder
  int world = 1;
  int zero = 0;
  int batch = 4;  // per rank
  int accum = 1;
  int steps = 4;
  int stop = -1;  // stop after this step, without export (TrainOptions::stop_after_step)
  int kill = -1;  // every rank SIGKILLs itself after this step
  int save_every = 0;
  std::string stage = "pretrain";
  std::string fault;  // "", "average" (no division by the world size), "twice" (bucket 0)
  bool exit_early = false;
  double dropout = 0;           // the depth transformer's (off by default: layouts compare)
  std::string reduce = "fp32";  // train.distributed.reduce_dtype

  nlohmann::json to_json() const {
    return {{"name", name},       {"world", world},  {"zero", zero},   {"batch", batch},
            {"accum", accum},     {"steps", steps},  {"stop", stop},   {"kill", kill},
            {"save", save_every}, {"stage", stage},  {"fault", fault}, {"exit", exit_early},
            {"dropout", dropout}, {"reduce", reduce}};
  }
};

// VILAU_TRAIN_DEVICE=cuda runs every rank on GPU LOCAL_RANK with NCCL, in fp32 so that the
// same tolerances hold (docs/training.md, "Distributed runs"); the CPU with Gloo otherwise.
bool on_cuda() {
  const char* device = std::getenv("VILAU_TRAIN_DEVICE");
  return device != nullptr && std::string(device) == "cuda";
}

Config run_config(const nlohmann::json& spec, const std::string& dir) {
  const std::string name = spec["name"];
  return testing::tiny_run(
      spec["stage"], dir,
      {"train.device=" + std::string(on_cuda() ? "auto" : "cpu"), "train.precision=fp32",
       "train.max_steps=" + std::to_string(spec["steps"].get<int>()),
       "data.batch_size=" + std::to_string(spec["batch"].get<int>()),
       "train.grad_accum=" + std::to_string(spec["accum"].get<int>()),
       "train.save_every=" + std::to_string(spec["save"].get<int>()),
       "train.distributed.zero_stage=" + std::to_string(spec["zero"].get<int>()),
       // Small buckets: several collectives per step even on the tiny model.
       "train.distributed.bucket_mb=0.02",
       "train.distributed.reduce_dtype=" + spec["reduce"].get<std::string>(),
       "train.distributed.timeout_s=" + std::string(spec["exit"].get<bool>() ? "5" : "120"),
       "train.output_dir=" + dir + "/" + name,
       "model.depth_transformer.resid_dropout=" + std::to_string(spec["dropout"].get<double>())});
}

TEST(TrainDist, Worker) {
  const char* dir = std::getenv("VILAU_TRAIN_DIR");
  if (dir == nullptr) GTEST_SKIP() << "runs only as a child of the TrainDistributed tests";
  const nlohmann::json spec = nlohmann::json::parse(std::getenv("VILAU_TRAIN_SPEC"));
  const DistEnv env = read_dist_env();
  const Config config = run_config(spec, dir);
  const bool exit_early = spec["exit"];
  const at::Device device =
      on_cuda() ? at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank)) : at::kCPU;
  const ProcessGroup group(env, device, std::chrono::seconds(exit_early ? 5 : 120));
  if (exit_early && env.rank == 1) std::_Exit(0);
  TrainOptions options;
  options.progress = false;
  options.stop_after_step = spec["stop"];
  if (spec["fault"] == "average") options.faults.skip_average = true;
  if (spec["fault"] == "twice") options.faults.reduce_twice = 0;
  const int kill = spec["kill"];
  nlohmann::json launches = nlohmann::json::array();
  options.after_step = [&](int64_t step, const ParallelOptimizer& optimizer) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& l : optimizer.gradient_sync().launches()) {
      list.push_back({{"bucket", l.bucket},
                      {"ready", l.gradients_ready},
                      {"during_backward", l.during_backward}});
    }
    launches.push_back({{"step", step},
                        {"parameters", optimizer.layout().params.size()},
                        {"buckets", optimizer.layout().buckets.size()},
                        {"launches", list},
                        {"parameter_bytes", optimizer.parameter_bytes()},
                        {"peak_units", optimizer.units() ? optimizer.units()->peak_units() : -1}});
    if (step == kill) std::raise(SIGKILL);
  };
  const TrainSummary summary = train(config, to_yaml(config), group, options);
  std::ofstream(std::string(dir) + "/" + spec["name"].get<std::string>() + "/result-rank" +
                std::to_string(env.rank) + ".json")
      << nlohmann::json{{"losses", summary.losses},
                        {"first_step", summary.first_step},
                        {"launches", launches}}
             .dump();
}

// What a run leaves behind, as the comparisons need it.
struct Outcome {
  std::vector<double> losses;                 // of the last process that ran, per step
  std::map<int64_t, double> grad_norms;       // metrics.jsonl, by step
  std::map<std::string, at::Tensor> weights;  // the export
  nlohmann::json result;                      // rank 0's result file
};

constexpr double kLr = 3e-3;  // configs/train/tiny-*.yaml

// Empty when a and b agree to `tolerance` (relative), else the first difference.
std::string difference(const Outcome& a, const Outcome& b, double tolerance) {
  if (a.losses.size() != b.losses.size()) return "a different number of steps";
  for (size_t i = 0; i < a.losses.size(); ++i) {
    if (std::abs(a.losses[i] - b.losses[i]) > tolerance * std::abs(a.losses[i])) {
      return "loss of step " + std::to_string(i) + ": " + std::to_string(a.losses[i]) + " vs " +
             std::to_string(b.losses[i]);
    }
  }
  for (const auto& [step, norm] : a.grad_norms) {
    const auto it = b.grad_norms.find(step);
    if (it == b.grad_norms.end() || std::abs(norm - it->second) > tolerance * std::abs(norm)) {
      return "grad norm of step " + std::to_string(step);
    }
  }
  if (a.weights.size() != b.weights.size() || a.weights.empty()) return "other weights";
  for (const auto& [name, t] : a.weights) {
    const auto it = b.weights.find(name);
    if (it == b.weights.end()) return "weight " + name + " missing";
    const double diff = (t - it->second).abs().max().item<double>();
    // An attention key bias shifts every score of a row equally, which softmax ignores: its
    // gradient is zero up to rounding, and AdamW turns that rounding noise into steps of
    // about lr. Any change of summation order changes it, so it gets lr's bound instead.
    if (name.size() > 8 && name.compare(name.size() - 8, 8, "key.bias") == 0) {
      if (diff > 2 * kLr * static_cast<double>(a.losses.size())) return "weight " + name;
      continue;
    }
    const double error = diff / std::max(1e-30, t.abs().max().item<double>());
    if (error > tolerance) return "weight " + name + ": relative error " + std::to_string(error);
  }
  return "";
}

class TrainDistributed : public testing::TempDirTest {
 protected:
  void SetUp() override {
    if (std::getenv("VILAU_TRAIN_DIR")) GTEST_SKIP() << "a worker runs only the Worker test";
    TempDirTest::SetUp();
    testing::write_training_set(dir_.string());
  }

  // Runs spec on its ranks; `expect_exit`: every rank must exit with 0.
  std::vector<testing::RankExit> launch(const RunSpec& spec, bool expect_exit = true) {
    fs::create_directories(dir_ / spec.name);
    const auto ranks = testing::spawn_ranks(
        "TrainDist.Worker", spec.world,
        {"VILAU_TRAIN_DIR=" + dir_.string(), "VILAU_TRAIN_SPEC=" + spec.to_json().dump()},
        dir_.string(), std::chrono::seconds(300));
    if (expect_exit) {
      for (const auto& r : ranks) EXPECT_TRUE(r.exited && r.code == 0) << spec.name << r.log;
    }
    return ranks;
  }

  Outcome outcome(const std::string& name) {
    Outcome o;
    const fs::path run = dir_ / name;
    if (fs::exists(run / "result-rank0.json")) {
      o.result = nlohmann::json::parse(std::ifstream(run / "result-rank0.json"));
      o.result["losses"].get_to(o.losses);
    }
    std::ifstream metrics(run / "metrics.jsonl");
    for (std::string line; std::getline(metrics, line);) {
      const auto record = nlohmann::json::parse(line);
      o.grad_norms[record["step"].get<int64_t>()] = record["grad_norm"].get<double>();
    }
    if (fs::exists(run / "export")) {
      for (auto& [name, t] : OfficialCheckpoint::open((run / "export").string()).load_all()) {
        o.weights[name] = t.to(at::kFloat).clone();
      }
    }
    return o;
  }

  Outcome run(const RunSpec& spec) {
    launch(spec);
    return outcome(spec.name);
  }

  // `whole` as the run "killed": every rank SIGKILLed after step `kill`, then started again.
  Outcome killed_and_resumed(RunSpec whole, int kill) {
    whole.name = "killed";
    whole.kill = kill;
    for (const auto& r : launch(whole, /*expect_exit=*/false)) EXPECT_FALSE(r.exited) << r.log;
    whole.kill = -1;
    return run(whole);
  }

  // A copy of run `from`'s checkpoints as the start of run `to`.
  void copy_checkpoints(const std::string& from, const std::string& to) {
    fs::create_directories(dir_ / to);
    fs::copy(dir_ / from / "checkpoints", dir_ / to / "checkpoints", fs::copy_options::recursive);
  }
};

TEST_F(TrainDistributed, TwoAndFourRanksAtEveryZeroStageMatchOneProcess) {
  // ZeRO-3 runs each block through its gather/recompute wrapper; 4 ranks shard every unit.
  const Outcome single = run({.name = "single", .world = 1, .batch = 4});
  ASSERT_EQ(single.losses.size(), 4u);
  for (int world : {2, 4}) {
    for (int zero : {0, 1, 2, 3}) {
      const std::string name = "w" + std::to_string(world) + "-zero" + std::to_string(zero);
      const Outcome o = run({.name = name, .world = world, .zero = zero, .batch = 4 / world});
      EXPECT_EQ(difference(single, o, 1e-5), "") << name;
    }
  }
}

TEST_F(TrainDistributed, ZeroThreeReplaysDropoutInItsRecompute) {
  // ZeRO-3 recomputes every block in backward; with the forward's random state restored
  // there, dropout masks (and so gradients) are those of a plain run.
  const Outcome plain = run({.name = "plain", .dropout = 0.3});
  const Outcome sharded = run({.name = "sharded", .zero = 3, .dropout = 0.3});
  EXPECT_EQ(difference(plain, sharded, 1e-5), "");
  const Outcome without = run({.name = "without"});
  EXPECT_NE(difference(plain, without, 1e-5), "") << "dropout changed nothing";
}

TEST_F(TrainDistributed, FourMicroBatchesMatchOneProcessAtEveryZeroStage) {
  // 8 samples per step: one batch of 8, or 4 micro-batches of 1 on each of 2 ranks.
  const Outcome single = run({.name = "single", .batch = 8, .steps = 3});
  const Outcome accumulated = run({.name = "accumulated", .batch = 2, .accum = 4, .steps = 3});
  EXPECT_EQ(difference(single, accumulated, 1e-5), "");
  for (int zero : {0, 1, 2, 3}) {
    const std::string name = "zero" + std::to_string(zero);
    const Outcome o =
        run({.name = name, .world = 2, .zero = zero, .batch = 1, .accum = 4, .steps = 3});
    EXPECT_EQ(difference(single, o, 1e-5), "") << name;
  }
}

TEST_F(TrainDistributed, BFloat16ReductionsStayCloseButAreReallyBFloat16) {
  // Gradients travel in bf16 (8 significant bits) and accumulate in fp32: close to the fp32
  // run, but measurably not equal to it.
  const Outcome single = run({.name = "single", .steps = 3});
  for (int zero : {0, 2, 3}) {
    const std::string name = "bf16-zero" + std::to_string(zero);
    const Outcome o =
        run({.name = name, .world = 2, .zero = zero, .batch = 2, .steps = 3, .reduce = "bf16"});
    EXPECT_EQ(difference(single, o, 2e-2), "") << name;
    EXPECT_NE(difference(single, o, 1e-5), "") << name << ": no different from fp32";
  }
}

TEST_F(TrainDistributed, ComparisonCatchesAMissingAverageAndABucketReducedTwice) {
  const Outcome single = run({.name = "single", .steps = 2});
  const Outcome good = run({.name = "good", .world = 2, .zero = 2, .batch = 2, .steps = 2});
  EXPECT_EQ(difference(single, good, 1e-5), "");
  const Outcome unaveraged =
      run({.name = "average", .world = 2, .zero = 1, .batch = 2, .steps = 2, .fault = "average"});
  EXPECT_NE(difference(single, unaveraged, 1e-5), "");
  const Outcome twice =
      run({.name = "twice", .world = 2, .zero = 2, .batch = 2, .steps = 2, .fault = "twice"});
  EXPECT_NE(difference(single, twice, 1e-5), "");
}

TEST_F(TrainDistributed, BucketsLaunchWhileBackwardRunsAtEveryZeroStage) {
  std::map<int, int64_t> held;  // trainable weight bytes each rank holds between steps
  for (int zero : {0, 1, 2, 3}) {
    const std::string name = "zero" + std::to_string(zero);
    const Outcome o = run({.name = name, .world = 2, .zero = zero, .batch = 2, .steps = 2});
    ASSERT_EQ(o.result["launches"].size(), 2u) << name;
    for (const auto& step : o.result["launches"]) {
      const int64_t buckets = step["buckets"], params = step["parameters"];
      const auto& launches = step["launches"];
      ASSERT_GE(buckets, 4) << name << ": too few buckets to show anything";
      ASSERT_EQ(static_cast<int64_t>(launches.size()), buckets) << name;
      int64_t after_all_gradients = 0;
      for (int64_t i = 0; i < buckets; ++i) {
        EXPECT_EQ(launches[i]["bucket"], i) << name;
        if (launches[i]["ready"].get<int64_t>() == params) ++after_all_gradients;
        if (i + 1 == buckets) continue;
        // Launched before loss.backward() returned.
        EXPECT_TRUE(launches[i]["during_backward"].get<bool>()) << name << " bucket " << i;
      }
      // Only the bucket holding the last gradient, and a later one it held back, may wait
      // for every gradient; all others ran while autograd still had gradients to produce.
      EXPECT_LE(after_all_gradients, 2) << name << ": " << launches.dump();
      if (zero == 3) {
        // Between steps only the root unit is whole; at most the unit running, the one
        // prefetched and one whose gradients are being reduced were ever gathered at once.
        EXPECT_GE(step["peak_units"].get<int64_t>(), 1) << name;
        EXPECT_LE(step["peak_units"].get<int64_t>(), 3) << name;
      }
      held[zero] = step["parameter_bytes"].get<int64_t>();
    }
  }
  EXPECT_EQ(held[1], held[0]);
  EXPECT_EQ(held[2], held[0]);
  EXPECT_LT(held[3], held[2]);  // ZeRO-3 keeps only the root unit whole
}

TEST_F(TrainDistributed, KilledRunResumesBitExactOnTheSameRanks) {
  const RunSpec whole{
      .name = "whole", .world = 2, .zero = 2, .batch = 2, .steps = 6, .save_every = 2};
  const Outcome reference = run(whole);
  const Outcome o = killed_and_resumed(whole, 3);
  EXPECT_EQ(o.result["first_step"], 2);  // the last checkpoint before the kill
  ASSERT_EQ(o.losses.size(), 4u);
  for (size_t i = 0; i < o.losses.size(); ++i) EXPECT_EQ(o.losses[i], reference.losses[2 + i]);
  ASSERT_EQ(o.weights.size(), reference.weights.size());
  for (const auto& [name, t] : reference.weights) {
    testing::expect_bitwise_equal(o.weights.at(name), t);
  }
}

TEST_F(TrainDistributed, CheckpointsResumeOnOtherWorldSizesAndZeroStages) {
  const Outcome reference =
      run({.name = "reference", .world = 2, .zero = 2, .batch = 2, .steps = 5});
  ASSERT_EQ(reference.losses.size(), 5u);
  // Saved at step 2 on 2 ranks (ZeRO-2) and on 1 rank; resumed elsewhere, same global batch.
  run({.name = "two", .world = 2, .zero = 2, .batch = 2, .steps = 5, .stop = 3, .save_every = 2});
  run({.name = "one", .world = 1, .batch = 4, .steps = 5, .stop = 3, .save_every = 2});
  run({.name = "three", .world = 4, .zero = 3, .batch = 1, .steps = 5, .stop = 3, .save_every = 2});
  const std::vector<std::tuple<std::string, RunSpec>> resumes = {
      {"two", {.name = "two-to-one", .world = 1, .batch = 4, .steps = 5}},
      {"two", {.name = "two-to-four", .world = 4, .zero = 1, .batch = 1, .steps = 5}},
      {"one", {.name = "one-to-two", .world = 2, .zero = 2, .batch = 2, .steps = 5}},
      {"two", {.name = "zero2-to-zero0", .world = 2, .zero = 0, .batch = 2, .steps = 5}},
      {"two", {.name = "zero2-to-zero3", .world = 2, .zero = 3, .batch = 2, .steps = 5}},
      {"three", {.name = "zero3-to-one", .world = 1, .batch = 4, .steps = 5}}};
  for (const auto& [from, spec] : resumes) {
    copy_checkpoints(from, spec.name);
    const Outcome o = run(spec);
    EXPECT_EQ(o.result["first_step"], 2) << spec.name;
    ASSERT_EQ(o.losses.size(), 3u) << spec.name;
    Outcome tail = reference;
    tail.losses.erase(tail.losses.begin(), tail.losses.begin() + 2);
    tail.grad_norms.erase(tail.grad_norms.begin(), tail.grad_norms.upper_bound(2));
    EXPECT_EQ(difference(tail, o, 1e-5), "") << spec.name;
  }
}

TEST_F(TrainDistributed, TowerStageResumesBitExactAfterAKill) {
  const RunSpec whole{.name = "whole",
                      .world = 2,
                      .zero = 1,
                      .batch = 2,
                      .steps = 4,
                      .save_every = 2,
                      .stage = "tower"};
  const Outcome reference = run(whole);
  const Outcome o = killed_and_resumed(whole, 3);
  EXPECT_EQ(o.result["first_step"], 2);
  ASSERT_EQ(o.losses.size(), 2u);
  for (size_t i = 0; i < o.losses.size(); ++i) EXPECT_EQ(o.losses[i], reference.losses[2 + i]);
  ASSERT_FALSE(reference.weights.empty());
  for (const auto& [name, t] : reference.weights) {
    testing::expect_bitwise_equal(o.weights.at(name), t);
  }
}

TEST_F(TrainDistributed, ARankThatExitsMakesTheOtherFailClearly) {
  const auto start = std::chrono::steady_clock::now();
  const auto ranks = launch({.name = "exit", .world = 2, .batch = 2, .exit_early = true},
                            /*expect_exit=*/false);
  ASSERT_TRUE(ranks[0].exited) << "rank 0 hung: " << ranks[0].log;
  EXPECT_NE(ranks[0].code, 0);
  EXPECT_THAT(ranks[0].log, ::testing::HasSubstr("rank 0 of 2"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(60));
}

}  // namespace
}  // namespace vilau
