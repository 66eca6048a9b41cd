#include "vilau/model/load_module.h"

#include <torch/torch.h>

#include "vilau/core/error.h"
#include "vilau/io/safetensors_header.h"

namespace vilau {

void load_module(torch::nn::Module& module, const TensorLookup& lookup, const std::string& prefix) {
  std::vector<std::pair<at::Tensor, at::Tensor>> copies;
  auto plan = [&](const std::string& key, const at::Tensor& target) {
    const std::string name = prefix + key;
    at::Tensor source = lookup(name);
    const std::string expected = io::shape_text(target.sizes().vec());
    if (!source.defined()) {
      throw ShapeError(describe(name, "checkpoint tensor", expected, "no such tensor"));
    }
    if (source.sizes() != target.sizes()) {
      throw ShapeError(
          describe(name, "checkpoint tensor", expected, io::shape_text(source.sizes().vec())));
    }
    copies.emplace_back(target, std::move(source));
  };
  for (const auto& item : module.named_parameters()) {
    plan(item.key(), item.value());
  }
  for (const auto& item : module.named_buffers()) {
    if (item.key().find("num_batches_tracked") == std::string::npos) {
      plan(item.key(), item.value());
    }
  }
  torch::NoGradGuard no_grad;
  for (auto& [target, source] : copies) {
    target.copy_(source);
  }
}

void add_module_tensors(std::map<std::string, at::Tensor>& out, const std::string& prefix,
                        torch::nn::Module& module) {
  for (const auto& item : module.named_parameters()) {
    out[prefix + item.key()] = item.value().detach();
  }
  for (const auto& item : module.named_buffers()) {
    if (item.key().find("num_batches_tracked") == std::string::npos) {
      out[prefix + item.key()] = item.value();
    }
  }
}

}  // namespace vilau
