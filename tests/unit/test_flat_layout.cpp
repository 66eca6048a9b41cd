// The flat layout behind every ZeRO stage, and the optimizer shard files built on it: every
// element of every parameter belongs to exactly one rank's shard whatever the bucket size
// and number of shards, and a shard index that does not describe the run is refused with
// the file and the key.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_util.h"
#include "vilau/core/error.h"
#include "vilau/dist/flat_layout.h"
#include "vilau/dist/process_group.h"
#include "vilau/train/parallel_optimizer.h"

namespace vilau {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

std::vector<std::pair<std::string, at::Tensor>> params_of_sizes(const std::vector<int64_t>& sizes) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t i = 0; i < sizes.size(); ++i) {
    out.emplace_back("llm.p" + std::to_string(i), torch::randn({sizes[i]}));
  }
  return out;
}

TEST(FlatLayout, PiecesCoverEveryElementOnceForAnyBucketSizeAndShardCount) {
  const std::vector<int64_t> sizes = {5, 1, 13, 64, 3, 9, 2};
  for (int64_t cap : {1, 10, 1000}) {
    for (int64_t shards : {1, 2, 3, 4, 7}) {
      const FlatLayout layout(params_of_sizes(sizes), cap, shards);
      std::vector<std::vector<int>> seen(sizes.size());
      for (size_t i = 0; i < sizes.size(); ++i) seen[i].assign(sizes[i], 0);
      for (int64_t rank = 0; rank < shards; ++rank) {
        std::vector<int> used(layout.shard_numel, 0);
        for (const FlatLayout::Piece& p : layout.pieces(rank)) {
          ASSERT_GE(p.shard_offset, 0);
          ASSERT_LE(p.shard_offset + p.length, layout.shard_numel);
          for (int64_t e = 0; e < p.length; ++e) {
            ++seen[p.param][p.start + e];
            ++used[p.shard_offset + e];
          }
        }
        for (int u : used) EXPECT_LE(u, 1) << "two pieces share a shard element";
      }
      for (size_t i = 0; i < sizes.size(); ++i) {
        for (int count : seen[i]) EXPECT_EQ(count, 1) << "param " << i << " cap " << cap;
      }
      for (const FlatLayout::Bucket& b : layout.buckets) EXPECT_EQ(b.padded % shards, 0);
      EXPECT_EQ(layout.shard_numel * shards, layout.padded);
    }
  }
}

TEST(FlatLayout, ShardValuesAndWriteBucketRoundTrip) {
  torch::manual_seed(0);
  auto named = params_of_sizes({5, 13, 7});
  const FlatLayout layout(named, 8, 3);
  std::vector<at::Tensor> before;
  for (const auto& [name, t] : named) before.push_back(t.clone());
  std::vector<at::Tensor> shards;
  for (int64_t r = 0; r < 3; ++r) shards.push_back(layout.shard_values(r));
  for (const auto& [name, t] : named) t.zero_();
  // Rebuild each bucket from the three shards, as an all-gather would, then write it back.
  for (size_t b = 0; b < layout.buckets.size(); ++b) {
    const FlatLayout::Bucket& bucket = layout.buckets[b];
    const int64_t chunk = bucket.chunk(3);
    at::Tensor full = at::zeros({bucket.padded});
    for (int64_t r = 0; r < 3; ++r) {
      full.narrow(0, r * chunk, chunk).copy_(shards[r].narrow(0, bucket.shard_offset, chunk));
    }
    layout.write_bucket(static_cast<int64_t>(b), full);
    for (int64_t i = bucket.first_param; i < bucket.end_param; ++i) {
      testing::expect_bitwise_equal(named[i].second, before[i]);
    }
  }
}

TEST(FlatLayout, UnitsKeepTheirParametersTogetherWithTheRootLast) {
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (const char* name :
       {"depth_transformer.head_transformer.blocks.1.w", "depth_transformer.classifier_mlp.w",
        "llm.lm_head.weight", "llm.model.layers.1.a", "llm.model.layers.1.b",
        "llm.model.layers.0.a", "llm.model.embed_tokens.weight", "mm_projector.layers.0.weight"}) {
    named.emplace_back(name, torch::zeros({4}));
  }
  const FlatLayout layout(named, fsdp_unit, 2);
  std::vector<std::string> units;
  for (const FlatLayout::Bucket& b : layout.buckets) {
    units.push_back(fsdp_unit(layout.params[b.first_param].name));
    for (int64_t i = b.first_param; i < b.end_param; ++i) {
      EXPECT_EQ(fsdp_unit(layout.params[i].name), units.back());
    }
  }
  EXPECT_EQ(units, (std::vector<std::string>{"depth_transformer.head_transformer.blocks.1",
                                             "llm.model.layers.1", "llm.model.layers.0",
                                             "mm_projector", "root"}));
  EXPECT_EQ(layout.buckets.back().end_param - layout.buckets.back().first_param, 3);
}

class OptimizerShards : public testing::TempDirTest {
 protected:
  const ProcessGroup& single() {
    static const ProcessGroup group(DistEnv{}, at::kCPU, std::chrono::seconds(10));
    return group;
  }
  std::unique_ptr<ParallelOptimizer> optimizer(const at::Tensor& w, const at::Tensor& b) {
    return std::make_unique<ParallelOptimizer>(
        std::vector<std::pair<std::string, at::Tensor>>{{"llm.weight", w}, {"llm.bias", b}},
        OptimizerConfig{}, DistributedConfig{}, single(), at::kCPU);
  }
  nlohmann::json index() {
    return nlohmann::json::parse(std::ifstream(path("optimizer.index.json")));
  }
  void write_index(const nlohmann::json& j) {
    std::ofstream(path("optimizer.index.json")) << j.dump();
  }
};

TEST_F(OptimizerShards, RoundTripAndRefuseIndexesThatDescribeAnotherRun) {
  torch::manual_seed(0);
  torch::nn::Linear linear(4, 3);
  auto saved = optimizer(linear->weight, linear->bias);
  saved->backward(linear->forward(torch::randn({2, 4})).square().sum(), true);
  saved->step(1.0, true);
  saved->save_shard(dir_.string(), "optimizer");
  const at::Tensor trained = linear->weight.detach().clone();

  // Loading writes the master weights back into the parameters.
  torch::NoGradGuard no_grad;
  linear->weight.zero_();
  auto loaded = optimizer(linear->weight, linear->bias);
  loaded->load_shard(dir_.string(), "optimizer");
  testing::expect_bitwise_equal(linear->weight.detach(), trained);

  const std::string file = path("optimizer.index.json");
  const nlohmann::json good = index();
  const auto refused = [&](nlohmann::json bad, const std::string& what) {
    write_index(bad);
    const std::string message = testing::error_of<FormatError>(
        [&] { optimizer(linear->weight, linear->bias)->load_shard(dir_.string(), "optimizer"); });
    EXPECT_THAT(message, AllOf(HasSubstr(file), HasSubstr(what))) << bad.dump();
  };
  nlohmann::json bad = good;
  bad["format"] = "something else";
  refused(bad, "key \"format\"");
  bad = good;
  bad["parameters"][0]["numel"] = 5;
  refused(bad, "parameter " + good["parameters"][0]["name"].get<std::string>());
  bad = good;
  bad["parameters"].push_back({{"name", "llm.extra"}, {"numel", 3}});
  refused(bad, "trainable ones, as this run has");
  bad = good;
  bad["pieces"][0]["length"] = 1000;
  refused(bad, "elements inside the parameter");
  bad = good;
  bad["pieces"].erase(bad["pieces"].begin());
  refused(bad, "covered once");
  bad = good;
  bad["steps"] = "three";
  refused(bad, "key \"steps\"");

  write_index(good);
  std::filesystem::remove(path("optimizer-rank0-of-1.safetensors"));
  EXPECT_THAT(testing::error_of<IoError>([&] {
                optimizer(linear->weight, linear->bias)->load_shard(dir_.string(), "optimizer");
              }),
              HasSubstr("optimizer-rank0-of-1.safetensors"));
}

}  // namespace
}  // namespace vilau
