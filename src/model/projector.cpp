#include "vilau/model/projector.h"

#include <torch/torch.h>

#include "vilau/core/linear.h"

namespace vilau {

MultimodalProjectorImpl::MultimodalProjectorImpl(int64_t vision_dim, int64_t llm_hidden) {
  layers = register_module(
      "layers", torch::nn::Sequential(torch::nn::Linear(vision_dim, llm_hidden), torch::nn::GELU(),
                                      torch::nn::Linear(llm_hidden, llm_hidden)));
}

at::Tensor MultimodalProjectorImpl::forward(const at::Tensor& features) {
  const at::Tensor h = linear(layers->at<torch::nn::LinearImpl>(0), features);
  return linear(layers->at<torch::nn::LinearImpl>(2),
                layers->at<torch::nn::GELUImpl>(1).forward(h));
}

}  // namespace vilau
