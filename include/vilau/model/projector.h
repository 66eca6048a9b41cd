#pragma once
// The multimodal projector (SPEC §3.3, official mlp2x_gelu): quantized vision features
// [..., C] -> LLM input embeddings [..., H]. Parameter names are the official ones relative
// to the projector's checkpoint (`layers.0.*`, `layers.2.*`).
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/pimpl.h>

#include <cstdint>

namespace vilau {

class MultimodalProjectorImpl : public torch::nn::Module {
 public:
  MultimodalProjectorImpl(int64_t vision_dim, int64_t llm_hidden);
  at::Tensor forward(const at::Tensor& features);

  torch::nn::Sequential layers{nullptr};  // 0: Linear(C, H), 1: GELU (erf), 2: Linear(H, H)
};
TORCH_MODULE(MultimodalProjector);

}  // namespace vilau
