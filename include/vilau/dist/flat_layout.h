#pragma once
// Where each trainable parameter lives in the flat fp32 buffers of data-parallel training.
//
// Parameters are laid out in the order backward produces their gradients and cut into
// buckets, the unit of communication. Each bucket is padded to a multiple of the number of
// shards, and shard r owns the r-th equal chunk of every bucket; a rank's shard is its
// chunks of all buckets, back to back. So a bucket can be reduce-scattered straight into the
// shard as soon as its gradients exist (ZeRO-2), and the shard of any parameter on any
// number of ranks is known from the layout alone (resharding checkpoints).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace vilau {

struct FlatLayout {
  struct Param {
    std::string name;
    at::Tensor tensor;
    int64_t bucket = 0;
    int64_t offset = 0;  // of its first element in the flat buffer
    int64_t numel = 0;
    std::vector<int64_t> shape;  // as built: ZeRO-3 swaps the tensor's data for an empty one
  };
  struct Bucket {
    int64_t begin = 0;   // in the flat buffer
    int64_t numel = 0;   // of its parameters
    int64_t padded = 0;  // a multiple of shards
    int64_t first_param = 0, end_param = 0;
    int64_t shard_offset = 0;  // where its chunk starts in every shard
    int64_t chunk(int64_t shards) const { return padded / shards; }
  };
  // A parameter's elements [start, start + length) at `shard_offset` in one rank's shard.
  struct Piece {
    int64_t param = 0;
    int64_t start = 0;
    int64_t length = 0;
    int64_t shard_offset = 0;
  };

  // named: in the order backward produces the gradients (reverse execution order). A bucket
  // closes once it holds at least bucket_numel elements.
  FlatLayout(std::vector<std::pair<std::string, at::Tensor>> named, int64_t bucket_numel,
             int64_t shards);
  // One bucket per unit instead (ZeRO-3): consecutive parameters with the same unit_of(name)
  // share one; the parameters whose unit is "root" form the last bucket.
  FlatLayout(std::vector<std::pair<std::string, at::Tensor>> named,
             const std::function<std::string(const std::string&)>& unit_of, int64_t shards);

  std::vector<Param> params;
  std::vector<Bucket> buckets;
  int64_t shards = 1;
  int64_t numel = 0;   // without padding
  int64_t padded = 0;  // the flat buffer
  int64_t shard_numel = 0;

  // Rank r's pieces, in shard order.
  std::vector<Piece> pieces(int64_t rank) const;
  // This rank's shard of the current parameter values, fp32.
  at::Tensor shard_values(int64_t rank) const;
  // The part of a flat [padded] buffer that is rank r's shard, copied out.
  at::Tensor shard_of(const at::Tensor& flat, int64_t rank) const;
  // The dtype bucket b's weights travel in when gathered: its parameters' dtype when they
  // share one (half the bytes of fp32 for bf16), fp32 otherwise.
  at::ScalarType gather_dtype(int64_t b) const;
  // Bucket b's values [padded_b] (fp32 or any dtype) -> its parameters.
  void write_bucket(int64_t b, const at::Tensor& values) const;
};

}  // namespace vilau
