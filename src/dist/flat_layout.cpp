#include "vilau/dist/flat_layout.h"

#include <torch/torch.h>

#include <algorithm>

#include "vilau/core/error.h"

namespace vilau {

namespace {

// Parameters in order, with where each new bucket starts.
void build(FlatLayout& layout, std::vector<std::pair<std::string, at::Tensor>>& named,
           const std::vector<bool>& starts_bucket) {
  if (layout.shards < 1) {
    throw Error(describe("flat layout", "shards", ">= 1", std::to_string(layout.shards)));
  }
  for (size_t i = 0; i < named.size(); ++i) {
    auto& [name, tensor] = named[i];
    if (layout.buckets.empty() || starts_bucket[i]) {
      FlatLayout::Bucket b;
      b.begin = layout.padded;
      b.first_param = b.end_param = static_cast<int64_t>(layout.params.size());
      b.shard_offset = layout.shard_numel;
      layout.buckets.push_back(b);
    }
    FlatLayout::Bucket& b = layout.buckets.back();
    FlatLayout::Param p;
    p.name = name;
    p.tensor = tensor;
    p.bucket = static_cast<int64_t>(layout.buckets.size()) - 1;
    p.offset = b.begin + b.numel;
    p.numel = tensor.numel();
    p.shape = tensor.sizes().vec();
    layout.params.push_back(std::move(p));
    b.numel += tensor.numel();
    b.end_param = static_cast<int64_t>(layout.params.size());
    // Re-derive the padding as the bucket grows.
    layout.padded -= b.padded;
    layout.shard_numel -= b.padded / layout.shards;
    b.padded = (b.numel + layout.shards - 1) / layout.shards * layout.shards;
    layout.padded += b.padded;
    layout.shard_numel += b.padded / layout.shards;
    layout.numel += tensor.numel();
  }
}

}  // namespace

FlatLayout::FlatLayout(std::vector<std::pair<std::string, at::Tensor>> named, int64_t bucket_numel,
                       int64_t shard_count)
    : shards(shard_count) {
  const int64_t cap = std::max<int64_t>(1, bucket_numel);
  std::vector<bool> starts(named.size(), false);
  int64_t filled = 0;
  for (size_t i = 0; i < named.size(); ++i) {
    starts[i] = filled >= cap;
    if (starts[i]) filled = 0;
    filled += named[i].second.numel();
  }
  build(*this, named, starts);
}

FlatLayout::FlatLayout(std::vector<std::pair<std::string, at::Tensor>> named,
                       const std::function<std::string(const std::string&)>& unit_of,
                       int64_t shard_count)
    : shards(shard_count) {
  std::stable_partition(named.begin(), named.end(),
                        [&unit_of](const auto& p) { return unit_of(p.first) != "root"; });
  std::vector<bool> starts(named.size(), false);
  for (size_t i = 1; i < named.size(); ++i) {
    starts[i] = unit_of(named[i].first) != unit_of(named[i - 1].first);
  }
  build(*this, named, starts);
}

std::vector<FlatLayout::Piece> FlatLayout::pieces(int64_t rank) const {
  std::vector<Piece> out;
  for (const Bucket& b : buckets) {
    const int64_t chunk = b.chunk(shards);
    const int64_t lo = b.begin + rank * chunk, hi = lo + chunk;
    for (int64_t i = b.first_param; i < b.end_param; ++i) {
      const Param& p = params[i];
      const int64_t begin = std::max(lo, p.offset), end = std::min(hi, p.offset + p.numel);
      if (begin < end) {
        out.push_back({i, begin - p.offset, end - begin, b.shard_offset + (begin - lo)});
      }
    }
  }
  return out;
}

at::Tensor FlatLayout::shard_values(int64_t rank) const {
  torch::NoGradGuard no_grad;
  const at::Device device = params.empty() ? at::Device(at::kCPU) : params.front().tensor.device();
  at::Tensor out = at::zeros({shard_numel}, at::TensorOptions().dtype(at::kFloat).device(device));
  for (const Piece& piece : pieces(rank)) {
    out.narrow(0, piece.shard_offset, piece.length)
        .copy_(
            params[piece.param].tensor.detach().reshape(-1).narrow(0, piece.start, piece.length));
  }
  return out;
}

at::Tensor FlatLayout::shard_of(const at::Tensor& flat, int64_t rank) const {
  at::Tensor out = at::empty({shard_numel}, flat.options());
  for (const Bucket& b : buckets) {
    const int64_t chunk = b.chunk(shards);
    out.narrow(0, b.shard_offset, chunk).copy_(flat.narrow(0, b.begin + rank * chunk, chunk));
  }
  return out;
}

at::ScalarType FlatLayout::gather_dtype(int64_t b) const {
  const Bucket& bucket = buckets[b];
  const at::ScalarType dtype = params[bucket.first_param].tensor.scalar_type();
  for (int64_t i = bucket.first_param; i < bucket.end_param; ++i) {
    if (params[i].tensor.scalar_type() != dtype) return at::kFloat;
  }
  return dtype;
}

void FlatLayout::write_bucket(int64_t b, const at::Tensor& values) const {
  torch::NoGradGuard no_grad;
  const Bucket& bucket = buckets[b];
  for (int64_t i = bucket.first_param; i < bucket.end_param; ++i) {
    const Param& p = params[i];
    at::Tensor target = p.tensor;
    target.copy_(values.narrow(0, p.offset - bucket.begin, p.numel).view(p.shape));
  }
}

}  // namespace vilau
