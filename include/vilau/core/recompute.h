#pragma once
// Activation checkpointing: trade compute for memory by keeping only a block's input and
// running the block a second time during backward.
#include <ATen/core/Tensor.h>

#include <functional>

namespace vilau {

using Block = std::function<at::Tensor(const at::Tensor&)>;

// Returns block(x) without keeping the activations inside the block; backward recomputes
// them. The block must be deterministic (no dropout) and its parameters must be leaves,
// whose gradients accumulate as usual. x must require grad, or nothing inside the block
// would be differentiated: callers run the block directly otherwise.
at::Tensor recompute_in_backward(Block block, const at::Tensor& x);

// Runs block `index` of a model on x and returns block(x), doing what the caller arranges
// around it: the trainer shards parameters this way (ZeRO-3 gathers a block's weights just
// before it runs), while the model code stays single-device. Models call block(x) directly
// when none is set.
using BlockWrapper =
    std::function<at::Tensor(int64_t index, const Block& block, const at::Tensor& x)>;

}  // namespace vilau
