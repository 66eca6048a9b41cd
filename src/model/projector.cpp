#include "vilau/model/projector.h"

#include <torch/torch.h>

namespace vilau {

MultimodalProjectorImpl::MultimodalProjectorImpl(int64_t vision_dim, int64_t llm_hidden) {
  layers = register_module(
      "layers", torch::nn::Sequential(torch::nn::Linear(vision_dim, llm_hidden), torch::nn::GELU(),
                                      torch::nn::Linear(llm_hidden, llm_hidden)));
}

at::Tensor MultimodalProjectorImpl::forward(const at::Tensor& features) {
  return layers->forward(features);
}

}  // namespace vilau
