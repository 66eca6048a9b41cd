#include "vilau/vision/residual_quantizer.h"

#include <cmath>
#include <string>

#include "vilau/core/error.h"

namespace vilau {
namespace {

std::string shape_of(torch::IntArrayRef sizes) {
  std::string s = "[";
  for (size_t i = 0; i < sizes.size(); ++i) {
    s += (i ? ", " : "") + std::to_string(sizes[i]);
  }
  return s + "]";
}

}  // namespace

RqCodebookImpl::RqCodebookImpl(int64_t codebook_size, int64_t embed_dim)
    : codebook_size_(codebook_size) {
  // As nn.Embedding(K + 1, C, padding_idx=K): N(0, 1) with a zero padding row.
  torch::Tensor init = torch::randn({codebook_size + 1, embed_dim});
  init[codebook_size].zero_();
  weight = register_parameter("weight", init, /*requires_grad=*/false);
  cluster_size_ema = register_buffer("cluster_size_ema", torch::zeros({codebook_size}));
  embed_ema = register_buffer("embed_ema", init.narrow(0, 0, codebook_size).clone());
}

ResidualQuantizerImpl::ResidualQuantizerImpl(const QuantizerConfig& config, int64_t embed_dim)
    : config_(config), embed_dim_(embed_dim) {
  if (config.codebook_size <= 0 || config.depth <= 0 || embed_dim <= 0) {
    throw ConfigError(
        describe("ResidualQuantizer", "codebook_size, depth and embed_dim", "positive",
                 std::to_string(config.codebook_size) + ", " + std::to_string(config.depth) + ", " +
                     std::to_string(embed_dim)));
  }
  torch::nn::ModuleList list;
  for (int64_t d = 0; d < config.depth; ++d) {
    // A shared codebook is registered under every depth, as the official ModuleList holds the
    // same module D times, so the state dict carries codebooks.{d} for all d.
    codebooks_.push_back(config.shared_codebook && d > 0
                             ? codebooks_.front()
                             : RqCodebook(config.codebook_size, embed_dim));
    list->push_back(codebooks_.back());
  }
  register_module("codebooks", list);
}

void ResidualQuantizerImpl::set_distance_chunk_rows(int64_t rows) {
  if (rows <= 0) {
    throw ConfigError(
        describe("ResidualQuantizer", "distance chunk rows", "positive", std::to_string(rows)));
  }
  chunk_rows_ = rows;
}

torch::Tensor ResidualQuantizerImpl::nearest_codes(const RqCodebookImpl& codebook,
                                                   const torch::Tensor& rows) const {
  torch::NoGradGuard no_grad;
  const torch::Tensor codes = codebook.codes().to(torch::kFloat32);
  // ‖x‖² is the same for every code of a row, so it cannot change the argmin.
  const torch::Tensor code_norms = codes.pow(2).sum(1).unsqueeze(0);
  const torch::Tensor codes_t = codes.t();
  const int64_t n = rows.size(0);
  torch::Tensor out = torch::empty({n}, rows.options().dtype(torch::kInt64));
  for (int64_t start = 0; start < n; start += chunk_rows_) {
    const int64_t len = std::min(chunk_rows_, n - start);
    const torch::Tensor chunk = rows.narrow(0, start, len).to(torch::kFloat32);
    const torch::Tensor dist = torch::addmm(code_norms, chunk, codes_t, 1.0, -2.0);
    out.narrow(0, start, len).copy_(dist.argmin(1));
  }
  return out;
}

ResidualQuantizerImpl::Output ResidualQuantizerImpl::forward(const torch::Tensor& x) {
  if (x.dim() < 2 || x.size(-1) != embed_dim_) {
    throw ShapeError(describe("ResidualQuantizer.forward", "input",
                              "[..., " + std::to_string(embed_dim_) + "]", shape_of(x.sizes())));
  }
  const torch::Tensor x_rows = x.reshape({-1, embed_dim_});
  torch::Tensor residual = x_rows.detach().clone();
  torch::Tensor aggregate = torch::zeros_like(residual);
  std::vector<torch::Tensor> codes, losses, norms;
  for (RqCodebook& codebook : codebooks_) {
    {
      torch::NoGradGuard no_grad;
      torch::Tensor k = nearest_codes(*codebook, residual);
      // Embedded before the update, as the official VQEmbedding.forward does.
      const torch::Tensor q = codebook->weight.index_select(0, k).to(residual.scalar_type());
      if (is_training()) {
        update_codebook(*codebook, residual, k);
      }
      residual.sub_(q);
      aggregate.add_(q);
      norms.push_back(residual.to(torch::kFloat32).norm(2, {1}).mean());
      codes.push_back(std::move(k));
    }
    // The 'cumsum' commitment loss: pulls x towards each partial sum, which stays fixed.
    losses.push_back((x_rows.to(torch::kFloat32) - aggregate.to(torch::kFloat32)).pow(2).mean());
  }
  std::vector<int64_t> code_shape(x.sizes().begin(), x.sizes().end() - 1);
  code_shape.push_back(config_.depth);
  Output out;
  out.z_q = x + (aggregate.view(x.sizes()) - x).detach();
  out.codes = torch::stack(codes, 1).view(code_shape);
  out.commitment_loss = torch::stack(losses).mean();
  out.residual_norms = torch::stack(norms);
  return out;
}

torch::Tensor ResidualQuantizerImpl::check_codes(const torch::Tensor& codes,
                                                 const char* where) const {
  if (codes.scalar_type() != torch::kInt64 || codes.dim() < 1 || codes.size(-1) != config_.depth) {
    throw ShapeError(
        describe(where, "codes", "int64 [..., " + std::to_string(config_.depth) + "]",
                 std::string(c10::toString(codes.scalar_type())) + " " + shape_of(codes.sizes())));
  }
  if (codes.numel() > 0) {
    const auto [lo, hi] = torch::aminmax(codes);
    if (lo.item<int64_t>() < 0 || hi.item<int64_t>() >= config_.codebook_size) {
      throw ShapeError(describe(
          where, "code values", "in [0, " + std::to_string(config_.codebook_size) + ")",
          std::to_string(lo.item<int64_t>()) + " .. " + std::to_string(hi.item<int64_t>())));
    }
  }
  return codes.reshape({-1, config_.depth});
}

ResidualQuantizerImpl::Embeddings ResidualQuantizerImpl::embed_codes(
    const torch::Tensor& codes) const {
  const torch::Tensor rows = check_codes(codes, "ResidualQuantizer.embed_codes");
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> per_depth;
  for (int64_t d = 0; d < config_.depth; ++d) {
    per_depth.push_back(codebooks_[d]->weight.index_select(0, rows.select(1, d)));
  }
  std::vector<int64_t> shape(codes.sizes().begin(), codes.sizes().end());
  shape.push_back(embed_dim_);
  Embeddings out;
  out.per_depth = torch::stack(per_depth, 1).view(shape);
  out.sum = out.per_depth.sum(-2);
  return out;
}

torch::Tensor ResidualQuantizerImpl::residual_inputs(const torch::Tensor& x,
                                                     const torch::Tensor& codes) const {
  const torch::Tensor per_depth = embed_codes(codes).per_depth;
  std::vector<int64_t> expected(codes.sizes().begin(), codes.sizes().end() - 1);
  expected.push_back(embed_dim_);
  if (x.sizes() != torch::IntArrayRef(expected)) {
    throw ShapeError(describe("ResidualQuantizer.residual_inputs", "input", shape_of(expected),
                              shape_of(x.sizes())));
  }
  // Subtracted depth by depth in x's dtype, as forward() does, so the results match bitwise.
  torch::NoGradGuard no_grad;
  torch::Tensor residual = x.detach().clone();
  std::vector<torch::Tensor> out;
  for (int64_t d = 0; d < config_.depth; ++d) {
    out.push_back(residual.clone());
    residual.sub_(per_depth.select(-2, d).to(residual.scalar_type()));
  }
  return torch::stack(out, -2);
}

void ResidualQuantizerImpl::update_codebooks(const torch::Tensor& inputs,
                                             const torch::Tensor& codes) {
  const torch::Tensor code_rows = check_codes(codes, "ResidualQuantizer.update_codebooks");
  std::vector<int64_t> expected(codes.sizes().begin(), codes.sizes().end());
  expected.push_back(embed_dim_);
  if (inputs.sizes() != torch::IntArrayRef(expected)) {
    throw ShapeError(describe("ResidualQuantizer.update_codebooks", "inputs", shape_of(expected),
                              shape_of(inputs.sizes())));
  }
  const torch::Tensor input_rows = inputs.reshape({-1, config_.depth, embed_dim_});
  for (int64_t d = 0; d < config_.depth; ++d) {
    update_codebook(*codebooks_[d], input_rows.select(1, d), code_rows.select(1, d));
  }
}

void ResidualQuantizerImpl::update_codebook(RqCodebookImpl& codebook, const torch::Tensor& rows,
                                            const torch::Tensor& codes) {
  torch::NoGradGuard no_grad;
  const int64_t k = codebook.codebook_size();
  const torch::Tensor vectors = rows.to(codebook.embed_ema.scalar_type());
  const auto opts = codebook.embed_ema.options();
  // Counts and sums travel in one all-reduce: [K, C | count].
  torch::Tensor stats = torch::zeros({k, embed_dim_ + 1}, opts);
  stats.narrow(1, 0, embed_dim_).index_add_(0, codes, vectors);
  stats.select(1, embed_dim_).index_add_(0, codes, torch::ones({codes.size(0)}, opts));
  if (sync_) sync_->all_reduce_sum(stats);
  const double decay = config_.decay;
  codebook.cluster_size_ema.mul_(decay).add_(stats.select(1, embed_dim_), 1.0 - decay);
  codebook.embed_ema.mul_(decay).add_(stats.narrow(1, 0, embed_dim_), 1.0 - decay);
  if (config_.restart_unused) {
    restart_dead_codes(codebook, vectors);
  }
  // Laplace smoothing keeps empty clusters from dividing by zero while preserving the total.
  const torch::Tensor n = codebook.cluster_size_ema.sum();
  const torch::Tensor smoothed =
      n * (codebook.cluster_size_ema + config_.eps) / (n + static_cast<double>(k) * config_.eps);
  codebook.codes().copy_(codebook.embed_ema / smoothed.unsqueeze(1));
}

void ResidualQuantizerImpl::restart_dead_codes(RqCodebookImpl& codebook,
                                               const torch::Tensor& rows) {
  // cluster_size_ema is identical on every rank after the all-reduce, so all ranks agree on
  // the dead set and on whether a broadcast follows.
  const torch::Tensor dead = (codebook.cluster_size_ema < 1.0).nonzero().squeeze(1);
  const int64_t n_dead = dead.size(0);
  if (n_dead == 0) {
    return;
  }
  const int64_t k = codebook.codebook_size();
  torch::Tensor picks;
  if (!sync_ || sync_->first) {
    const int64_t n = rows.size(0);
    if (n == 0) {
      throw ShapeError(
          describe("ResidualQuantizer", "codebook restart input rows", "at least one", "0"));
    }
    torch::Tensor pool = rows;
    if (n < k) {
      // Tiled copies are made distinct by noise small against the typical vector norm.
      pool = rows.repeat({(k + n - 1) / n, 1});
      pool = pool + torch::rand(pool.sizes(), generator_, pool.options()) *
                        (0.01 / std::sqrt(static_cast<double>(embed_dim_)));
    }
    const torch::Tensor perm =
        torch::randperm(pool.size(0), generator_, dead.options()).narrow(0, 0, k);
    picks = pool.index_select(0, perm.index_select(0, dead)).contiguous();
  } else {
    picks = torch::empty({n_dead, embed_dim_}, codebook.embed_ema.options());
  }
  if (sync_) sync_->broadcast_from_first(picks);
  codebook.embed_ema.index_copy_(0, dead, picks);
  codebook.cluster_size_ema.index_fill_(0, dead, 1.0);
}

}  // namespace vilau
