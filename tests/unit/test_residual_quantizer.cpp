// The residual quantizer against brute force, a hand-computed EMA step, the official names,
// and a two-process run whose ranks must end with identical codebooks.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/FileStore.hpp>

#include "spawn_ranks.h"
#include "test_util.h"
#include "vilau/core/error.h"
#include "vilau/io/safetensors.h"
#include "vilau/vision/residual_quantizer.h"

namespace vilau {
namespace {

QuantizerConfig config(int64_t k, int64_t depth, bool restart = true, double decay = 0.99) {
  QuantizerConfig c;
  c.codebook_size = k;
  c.depth = depth;
  c.restart_unused = restart;
  c.decay = decay;
  return c;
}

// Everything the state dict holds, by name.
std::map<std::string, torch::Tensor> state_of(const ResidualQuantizer& q) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : q->named_parameters()) out[p.key()] = p.value();
  for (const auto& b : q->named_buffers()) out[b.key()] = b.value();
  return out;
}

TEST(ResidualQuantizer, NamesAndShapesMatchTheOfficialCheckpoint) {
  ResidualQuantizer q(config(8, 2), 4);
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& [name, t] : state_of(q)) shapes[name] = t.sizes().vec();
  const std::map<std::string, std::vector<int64_t>> expected{
      {"codebooks.0.weight", {9, 4}},        {"codebooks.1.weight", {9, 4}},
      {"codebooks.0.cluster_size_ema", {8}}, {"codebooks.1.cluster_size_ema", {8}},
      {"codebooks.0.embed_ema", {8, 4}},     {"codebooks.1.embed_ema", {8, 4}}};
  EXPECT_EQ(shapes, expected);
  for (const auto& p : q->named_parameters()) {
    EXPECT_FALSE(p.value().requires_grad()) << p.key();
    // The padding row is zero and never selected.
    EXPECT_TRUE(p.value()[8].eq(0).all().item<bool>()) << p.key();
  }
  EXPECT_FALSE(q->codebook(0)->weight.is_same(q->codebook(1)->weight));

  QuantizerConfig shared = config(8, 2);
  shared.shared_codebook = true;
  ResidualQuantizer s(shared, 4);
  const auto state = state_of(s);
  EXPECT_EQ(state.size(), 6u);
  EXPECT_TRUE(state.at("codebooks.0.weight").is_same(state.at("codebooks.1.weight")));
}

TEST(ResidualQuantizer, CodesAreTheTrueArgminAndZqIsTheirSum) {
  torch::manual_seed(0);
  ResidualQuantizer q(config(16, 3), 4);
  q->eval();
  const torch::Tensor x = torch::randn({2, 3, 5, 4});
  const auto out = q->forward(x);
  ASSERT_EQ(out.codes.sizes(), (std::vector<int64_t>{2, 3, 5, 3}));
  ASSERT_EQ(out.codes.scalar_type(), torch::kInt64);

  torch::Tensor residual = x.reshape({-1, 4}).to(torch::kFloat64);
  torch::Tensor sum = torch::zeros_like(residual);
  const torch::Tensor codes = out.codes.reshape({-1, 3});
  for (int64_t d = 0; d < 3; ++d) {
    const torch::Tensor book = q->codebook(d)->codes().to(torch::kFloat64);
    const torch::Tensor expected = torch::cdist(residual, book).argmin(1);
    ASSERT_TRUE(codes.select(1, d).equal(expected)) << "depth " << d;
    const torch::Tensor chosen = book.index_select(0, expected);
    residual -= chosen;
    sum += chosen;
  }
  EXPECT_TRUE(torch::allclose(out.z_q.reshape({-1, 4}).to(torch::kFloat64), sum, 1e-5, 1e-6));
  const auto emb = q->embed_codes(out.codes);
  EXPECT_EQ(emb.per_depth.sizes(), (std::vector<int64_t>{2, 3, 5, 3, 4}));
  EXPECT_TRUE(torch::allclose(emb.sum.reshape({-1, 4}).to(torch::kFloat64), sum, 1e-5, 1e-6));
  // Out-of-range codes would silently read the padding row.
  testing::error_of<ShapeError>([&] { q->embed_codes(torch::full({2, 3}, 16, torch::kInt64)); });
  testing::error_of<ShapeError>([&] { q->forward(torch::randn({3, 5})); });
}

TEST(ResidualQuantizer, ResidualNormsNeverGrowWhenTheCodebookHoldsZero) {
  torch::manual_seed(1);
  ResidualQuantizer q(config(32, 6), 8);
  q->eval();
  {
    torch::NoGradGuard no_grad;
    // With a zero code the nearest code is never farther than the residual itself, so
    // ‖r_{d+1}‖ ≤ ‖r_d‖ at every position.
    for (int64_t d = 0; d < 6; ++d) q->codebook(d)->weight[5].zero_();
  }
  const torch::Tensor x = torch::randn({200, 8}) * 3;
  const auto out = q->forward(x);
  const torch::Tensor inputs = q->residual_inputs(x, out.codes);  // [200, 6, 8]
  const torch::Tensor norms =
      torch::cat({inputs, (x - out.z_q).unsqueeze(1)}, 1).norm(2, {2});  // [200, 7]
  EXPECT_TRUE((norms.slice(1, 1) <= norms.slice(1, 0, 6) + 1e-5).all().item<bool>());
  // Random codes of norm ~√8 against inputs of norm ~3√8: the first depths must help.
  EXPECT_LT(norms.select(1, 6).mean().item<double>(), norms.select(1, 0).mean().item<double>());
  EXPECT_TRUE(torch::allclose(out.residual_norms, norms.slice(1, 1).mean(0), 1e-5, 1e-5));
}

TEST(ResidualQuantizer, ChunkedDistancesEqualUnchunked) {
  torch::manual_seed(2);
  ResidualQuantizer q(config(64, 3), 8);
  q->eval();
  const torch::Tensor x = torch::randn({257, 8});
  q->set_distance_chunk_rows(100000);
  const auto whole = q->forward(x);
  for (int64_t rows : {1, 7, 256}) {
    q->set_distance_chunk_rows(rows);
    const auto chunked = q->forward(x);
    EXPECT_TRUE(chunked.codes.equal(whole.codes)) << rows;
    EXPECT_TRUE(chunked.z_q.equal(whole.z_q)) << rows;
  }
  testing::error_of<ConfigError>([&] { q->set_distance_chunk_rows(0); });
}

TEST(ResidualQuantizer, EmaUpdateMatchesAHandComputedExample) {
  QuantizerConfig c = config(2, 1, /*restart=*/true, /*decay=*/0.5);
  c.eps = 0.1;
  ResidualQuantizer q(c, 2);
  {
    torch::NoGradGuard no_grad;
    auto cb = q->codebook(0);
    cb->weight.copy_(torch::tensor({{0.f, 0.f}, {10.f, 0.f}, {0.f, 0.f}}));
    cb->embed_ema.copy_(torch::tensor({{0.f, 0.f}, {10.f, 0.f}}));
    cb->cluster_size_ema.fill_(1.0);
  }
  // (1,0) and (2,2) go to code 0, (9,0) to code 1: counts (2, 1), sums (3,2) and (9,0).
  const torch::Tensor x = torch::tensor({{1.f, 0.f}, {2.f, 2.f}, {9.f, 0.f}});
  q->train();
  const auto out = q->forward(x);
  EXPECT_TRUE(out.codes.equal(torch::tensor({{0}, {0}, {1}}, torch::kInt64)));
  // Embedded with the codebook as it was before this step's update.
  EXPECT_TRUE(out.z_q.equal(torch::tensor({{0.f, 0.f}, {0.f, 0.f}, {10.f, 0.f}})));
  auto cb = q->codebook(0);
  // cluster_size_ema = 0.5·(1, 1) + 0.5·(2, 1) = (1.5, 1.0): both alive, nothing restarted.
  EXPECT_TRUE(torch::allclose(cb->cluster_size_ema, torch::tensor({1.5f, 1.0f})));
  // embed_ema = 0.5·((0,0), (10,0)) + 0.5·((3,2), (9,0)) = ((1.5,1), (9.5,0)).
  EXPECT_TRUE(torch::allclose(cb->embed_ema, torch::tensor({{1.5f, 1.f}, {9.5f, 0.f}})));
  // n = 2.5; smoothed = n·(size + 0.1) / (n + 2·0.1) = (4/2.7, 2.75/2.7);
  // codes = embed_ema / smoothed = ((1.0125, 0.675), (9.5·2.7/2.75 = 9.3272727, 0)).
  EXPECT_TRUE(torch::allclose(
      cb->weight, torch::tensor({{1.0125f, 0.675f}, {9.3272727f, 0.f}, {0.f, 0.f}}), 1e-5, 1e-6));

  // The explicit update after an eval-mode forward is the same step.
  ResidualQuantizer e(c, 2);
  {
    torch::NoGradGuard no_grad;
    e->codebook(0)->weight.copy_(torch::tensor({{0.f, 0.f}, {10.f, 0.f}, {0.f, 0.f}}));
    e->codebook(0)->embed_ema.copy_(torch::tensor({{0.f, 0.f}, {10.f, 0.f}}));
    e->codebook(0)->cluster_size_ema.fill_(1.0);
  }
  e->eval();
  const auto eval_out = e->forward(x);
  e->update_codebooks(e->residual_inputs(x, eval_out.codes), eval_out.codes);
  EXPECT_TRUE(e->codebook(0)->weight.equal(cb->weight));
  EXPECT_TRUE(e->codebook(0)->embed_ema.equal(cb->embed_ema));
}

// Codebook 0 of a K=8, C=4 quantizer whose only used code is 0; codes 2 and 4 die this step.
struct RestartCase {
  ResidualQuantizer q{config(8, 1), 4};
  torch::Tensor old_ema, old_sizes;

  RestartCase() {
    torch::NoGradGuard no_grad;
    auto cb = q->codebook(0);
    cb->weight.narrow(0, 0, 8).copy_(torch::arange(8).unsqueeze(1).expand({8, 4}) * 10.0);
    cb->embed_ema.copy_(cb->weight.narrow(0, 0, 8));
    cb->cluster_size_ema.copy_(torch::tensor({5.f, 5.f, 0.f, 5.f, 0.5f, 5.f, 5.f, 5.f}));
    old_ema = cb->embed_ema.clone();
    old_sizes = cb->cluster_size_ema.clone();
    q->train();
  }

  void check(const torch::Tensor& x, double noise) {
    q->forward(x);
    auto cb = q->codebook(0);
    const double n = x.size(0);
    const torch::Tensor dead = torch::tensor({2, 4}, torch::kInt64);
    const torch::Tensor live = torch::tensor({0, 1, 3, 5, 6, 7}, torch::kInt64);
    // Live codes: plain EMA; every input went to code 0.
    torch::Tensor sizes = old_sizes * 0.99;
    sizes[0] += 0.01 * n;
    torch::Tensor ema = old_ema * 0.99;
    ema[0] += 0.01 * x.sum(0);
    EXPECT_TRUE(
        torch::allclose(cb->cluster_size_ema.index_select(0, live), sizes.index_select(0, live)));
    EXPECT_TRUE(torch::allclose(cb->embed_ema.index_select(0, live), ema.index_select(0, live)));
    // Dead codes: size 1 and an input vector plus noise in [0, noise).
    EXPECT_TRUE(cb->cluster_size_ema.index_select(0, dead).equal(torch::ones({2})));
    for (int64_t i : {2, 4}) {
      const torch::Tensor diff = cb->embed_ema[i].unsqueeze(0) - x;
      EXPECT_TRUE(((diff >= 0) & (diff <= noise)).all(1).any().item<bool>()) << i;
    }
  }
};

// Against VILA-U's RQBottleneck (tests/reference/make_quantizer_fixtures.py), fp32: the codes,
// z_q and commitment loss of an eval forward, then the codebooks and EMA buffers after each
// of two training forwards, with separate and with shared codebooks.
TEST(ResidualQuantizer, MatchesTheOfficialQuantizerAndItsEmaUpdate) {
  const io::SafetensorsFile f =
      io::SafetensorsFile::open(VILAU_TEST_DATA_DIR "/quantizer/quantizer_tiny.safetensors");
  const auto close = [](const torch::Tensor& got, const torch::Tensor& expected) {
    return ((got - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).item<double>() <
           1e-5;
  };
  for (const bool shared : {false, true}) {
    const std::string tag = shared ? "shared" : "separate";
    SCOPED_TRACE(tag);
    QuantizerConfig c = config(12, 3, /*restart=*/true, /*decay=*/0.9);
    c.shared_codebook = shared;
    ResidualQuantizer q(c, 16);
    const int64_t books = shared ? 1 : 3;
    const auto buffers = [&](const std::string& prefix, int64_t d) {
      return std::map<std::string, torch::Tensor>{
          {"weight", f.tensor(prefix + ".codebooks." + std::to_string(d) + ".weight")},
          {"cluster_size_ema",
           f.tensor(prefix + ".codebooks." + std::to_string(d) + ".cluster_size_ema")},
          {"embed_ema", f.tensor(prefix + ".codebooks." + std::to_string(d) + ".embed_ema")}};
    };
    {
      torch::NoGradGuard no_grad;
      for (int64_t d = 0; d < books; ++d) {
        RqCodebook book = q->codebook(d);
        const auto initial = buffers(tag + ".initial", d);
        book->weight.copy_(initial.at("weight"));
        book->cluster_size_ema.copy_(initial.at("cluster_size_ema"));
        book->embed_ema.copy_(initial.at("embed_ema"));
      }
    }
    q->eval();
    const auto eval = q->forward(f.tensor(tag + ".eval.input"));
    EXPECT_TRUE(torch::equal(eval.codes, f.tensor(tag + ".eval.codes")));
    EXPECT_TRUE(close(eval.z_q, f.tensor(tag + ".eval.z_q")));
    EXPECT_TRUE(close(eval.commitment_loss.reshape({1}), f.tensor(tag + ".eval.commitment_loss")));
    q->train();
    for (int step = 0; step < 2; ++step) {
      SCOPED_TRACE("training step " + std::to_string(step));
      const std::string prefix = tag + ".train." + std::to_string(step);
      const auto out = q->forward(f.tensor(prefix + ".input"));
      EXPECT_TRUE(torch::equal(out.codes, f.tensor(prefix + ".codes")));
      for (int64_t d = 0; d < books; ++d) {
        RqCodebook book = q->codebook(d);
        const auto expected = buffers(prefix, d);
        EXPECT_TRUE(close(book->weight, expected.at("weight"))) << "weight " << d;
        EXPECT_TRUE(close(book->cluster_size_ema, expected.at("cluster_size_ema"))) << d;
        EXPECT_TRUE(close(book->embed_ema, expected.at("embed_ema"))) << "embed_ema " << d;
      }
    }
    // The codebooks did move: a quantizer that skipped the update would fail above.
    EXPECT_FALSE(close(q->codebook(0)->weight, buffers(tag + ".initial", 0).at("weight")));
  }
}

TEST(ResidualQuantizer, RestartReplacesExactlyTheDeadCodes) {
  {
    RestartCase few;  // 3 < K inputs: tiled with noise
    few.q->set_generator(at::make_generator<at::CPUGeneratorImpl>(3));
    few.check(torch::rand({3, 4}), 0.01 / 2);
  }
  {
    RestartCase many;  // 20 ≥ K inputs: picked as they are
    many.q->set_generator(at::make_generator<at::CPUGeneratorImpl>(4));
    many.check(torch::rand({20, 4}), 0.0);
  }
}

TEST(ResidualQuantizer, GradientsPassStraightThroughAndNeverReachTheCodebooks) {
  torch::manual_seed(5);
  ResidualQuantizer q(config(16, 3), 4);
  q->eval();
  const torch::Tensor x = torch::randn({6, 4}, torch::requires_grad());
  const auto out = q->forward(x);
  const torch::Tensor upstream = torch::randn({6, 4});
  (out.z_q * upstream).sum().backward();
  EXPECT_TRUE(x.grad().equal(upstream));
  for (const auto& p : q->parameters()) EXPECT_FALSE(p.grad().defined());

  // The commitment loss pulls x towards each partial sum: d/dx = 2·Σ_d (x - s_d) / (D·numel).
  x.mutable_grad() = torch::Tensor();
  q->forward(x).commitment_loss.backward();
  const torch::Tensor partial = q->embed_codes(out.codes).per_depth.cumsum(1);  // [6, 3, 4]
  const torch::Tensor expected = 2.0 * (x.detach().unsqueeze(1) - partial).sum(1) / (3 * 24);
  EXPECT_TRUE(torch::allclose(x.grad(), expected, 1e-5, 1e-6));
}

// A c10d backend over a FileStore: enough collectives (sum all-reduce, broadcast) for the
// quantizer, with sums taken in rank order so every rank gets the same bits.
class StoreBackend final : public c10d::Backend {
 public:
  StoreBackend(c10::intrusive_ptr<c10d::Store> store, int rank, int size)
      : Backend(rank, size), store_(std::move(store)) {}
  const std::string getBackendName() const override { return "test-store"; }

  c10::intrusive_ptr<c10d::Work> allreduce(std::vector<at::Tensor>& tensors,
                                           const c10d::AllreduceOptions&) override {
    for (at::Tensor& t : tensors) {
      const std::string key = "allreduce/" + std::to_string(seq_++) + "/";
      store_->set(key + std::to_string(getRank()), bytes(t));
      at::Tensor sum = at::zeros_like(t);
      for (int r = 0; r < getSize(); ++r) sum += tensor(store_->get(key + std::to_string(r)), t);
      t.copy_(sum);
    }
    return c10::make_intrusive<DoneWork>();
  }

  c10::intrusive_ptr<c10d::Work> broadcast(std::vector<at::Tensor>& tensors,
                                           const c10d::BroadcastOptions& opts) override {
    for (at::Tensor& t : tensors) {
      const std::string key = "broadcast/" + std::to_string(seq_++);
      if (getRank() == opts.rootRank) {
        store_->set(key, bytes(t));
      } else {
        t.copy_(tensor(store_->get(key), t));
      }
    }
    return c10::make_intrusive<DoneWork>();
  }

 private:
  struct DoneWork : c10d::Work {
    bool isCompleted() override { return true; }
    bool wait(std::chrono::milliseconds) override { return true; }
  };
  static std::vector<uint8_t> bytes(const at::Tensor& t) {
    const at::Tensor c = t.contiguous();
    const auto* p = static_cast<const uint8_t*>(c.data_ptr());
    return {p, p + c.nbytes()};
  }
  static at::Tensor tensor(std::vector<uint8_t> data, const at::Tensor& like) {
    return torch::from_blob(data.data(), like.sizes(), like.options()).clone();
  }

  c10::intrusive_ptr<c10d::Store> store_;
  int64_t seq_ = 0;
};

// The collectives the trainer would hand the quantizer, here over the store.
ResidualQuantizerImpl::RankSync sync_over(const c10::intrusive_ptr<StoreBackend>& group) {
  ResidualQuantizerImpl::RankSync sync;
  sync.all_reduce_sum = [group](torch::Tensor& t) {
    std::vector<at::Tensor> tensors{t};
    group->allreduce(tensors, c10d::AllreduceOptions());
  };
  sync.broadcast_from_first = [group](torch::Tensor& t) {
    std::vector<at::Tensor> tensors{t};
    c10d::BroadcastOptions options;
    options.rootRank = 0;
    group->broadcast(tensors, options);
  };
  sync.first = group->getRank() == 0;
  return sync;
}

// Both ranks and the single-process reference build identical modules and data.
ResidualQuantizer dist_quantizer(bool restart) {
  torch::manual_seed(1234);
  ResidualQuantizer q(config(8, 2, restart, 0.9), 4);
  q->train();
  return q;
}
torch::Tensor dist_data() {  // [step, rank, rows, C]
  torch::manual_seed(99);
  return torch::randn({2, 2, 16, 4});
}
torch::Tensor restart_data() {  // [rank, rows, C]: fewer rows than codes, all codes dead
  torch::manual_seed(98);
  return torch::randn({2, 3, 4});
}

std::vector<torch::Tensor> flat_state(const ResidualQuantizer& q) {
  std::vector<torch::Tensor> out;
  for (const auto& [name, t] : state_of(q)) out.push_back(t.clone());
  return out;
}

TEST(ResidualQuantizerDist, Worker) {
  const char* rank_env = std::getenv("RANK");
  const char* dir = std::getenv("VILAU_RQ_DIR");
  if (!rank_env || !dir) GTEST_SKIP() << "runs only as a child of TwoRanksAgree";
  const int rank = std::atoi(rank_env);
  auto store = c10::make_intrusive<c10d::FileStore>(std::string(dir) + "/store", 2);
  store->setTimeout(std::chrono::seconds(60));
  auto group = c10::make_intrusive<StoreBackend>(store, rank, 2);

  ResidualQuantizer plain = dist_quantizer(false);
  plain->set_rank_sync(sync_over(group));
  const torch::Tensor x = dist_data();
  for (int64_t step = 0; step < x.size(0); ++step) plain->forward(x[step][rank]);

  ResidualQuantizer restarted = dist_quantizer(true);
  restarted->set_rank_sync(sync_over(group));
  // Different picks and noise on each rank: only the broadcast can make them agree.
  restarted->set_generator(at::make_generator<at::CPUGeneratorImpl>(7 + rank));
  restarted->forward(restart_data()[rank]);

  std::vector<torch::Tensor> state = flat_state(plain);
  for (const torch::Tensor& t : flat_state(restarted)) state.push_back(t);
  torch::save(state, std::string(dir) + "/rank" + std::to_string(rank) + ".pt");
}

class ResidualQuantizerDistTest : public testing::TempDirTest {};

TEST_F(ResidualQuantizerDistTest, TwoRanksAgreeAndMatchOneProcessOnTheJoinedData) {
  if (std::getenv("VILAU_RQ_DIR")) GTEST_SKIP() << "a worker process runs only the Worker test";
  const auto ranks =
      testing::spawn_ranks("ResidualQuantizerDist.Worker", 2, {"VILAU_RQ_DIR=" + dir_.string()},
                           dir_.string(), std::chrono::seconds(120));
  for (const auto& rank : ranks) {
    ASSERT_TRUE(rank.exited && rank.code == 0) << rank.log;
  }
  std::vector<torch::Tensor> rank0, rank1;
  torch::load(rank0, path("rank0.pt"));
  torch::load(rank1, path("rank1.pt"));
  ASSERT_EQ(rank0.size(), rank1.size());
  for (size_t i = 0; i < rank0.size(); ++i) testing::expect_bitwise_equal(rank0[i], rank1[i]);

  ResidualQuantizer reference = dist_quantizer(false);
  const torch::Tensor x = dist_data();
  for (int64_t step = 0; step < x.size(0); ++step) reference->forward(x[step].reshape({-1, 4}));
  const auto expected = flat_state(reference);
  ASSERT_EQ(rank0.size(), 2 * expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_TRUE(torch::allclose(rank0[i], expected[i], 1e-5, 1e-6)) << i;
  }
  // The restarted depth-0 codes all come from rank 0's rows (plus noise below 0.01/√4).
  const auto names = state_of(reference);
  const size_t ema0 = std::distance(names.begin(), names.find("codebooks.0.embed_ema"));
  const torch::Tensor restarted = rank0[expected.size() + ema0];
  const torch::Tensor diff = restarted.unsqueeze(1) - restart_data()[0].unsqueeze(0);  // [8,3,4]
  EXPECT_TRUE(((diff >= 0) & (diff < 0.005)).all(2).any(1).all().item<bool>());
}

}  // namespace
}  // namespace vilau
