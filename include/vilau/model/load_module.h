#pragma once
// Filling a module's tensors from a checkpoint by their canonical names.
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <functional>
#include <map>
#include <string>

namespace vilau {

// Returns the tensor stored under a full name, or an undefined tensor when there is none.
using TensorLookup = std::function<at::Tensor(const std::string&)>;

// Copies every parameter and buffer of `module` from `lookup(prefix + name)`, converting
// dtype and device to the module's. Everything is checked before anything is copied:
// ShapeError naming the tensor, with the expected and found shapes, when one is missing or
// mismatched. BatchNorm's num_batches_tracked counters are not checkpoint tensors.
void load_module(torch::nn::Module& module, const TensorLookup& lookup, const std::string& prefix);

// The inverse: every parameter (detached) and buffer of `module` into `out` as prefix + name.
void add_module_tensors(std::map<std::string, at::Tensor>& out, const std::string& prefix,
                        torch::nn::Module& module);

}  // namespace vilau
