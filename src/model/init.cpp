#include "vilau/model/init.h"

#include <torch/torch.h>
#include <unistd.h>

#include "vilau/core/error.h"
#include "vilau/llm/depth_transformer.h"
#include "vilau/llm/llama.h"
#include "vilau/model/load_module.h"
#include "vilau/model/projector.h"
#include "vilau/model/state_dict_adapter.h"
#include "vilau/vision/vision_tower.h"

namespace vilau {

namespace {

void check_memory(const ModelConfig& config) {
  int64_t values = 0;
  for (const ComponentCount& c : count_parameters(config)) {
    values = std::max(values, c.parameters + c.buffers);  // one component in fp32 at a time
  }
  const double needed = static_cast<double>(values) * 4;
  const double available =
      static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGE_SIZE));
  if (needed > 0.8 * available) {
    throw Error(
        describe("init of model '" + config.name + "'", "not enough memory",
                 std::to_string(static_cast<int64_t>(needed / 1e9)) +
                     " GB for its largest component in fp32",
                 std::to_string(static_cast<int64_t>(available / 1e9)) + " GB on this machine"));
  }
}

// Converts module by module, so that only one component exists in fp32 at a time.
void collect(std::map<std::string, at::Tensor>& out, const std::string& prefix,
             torch::nn::Module& module) {
  std::map<std::string, at::Tensor> tensors;
  add_module_tensors(tensors, prefix, module);
  for (auto& [name, t] : tensors) {
    out[name] = t.to(torch::kBFloat16);
  }
}

}  // namespace

std::map<std::string, at::Tensor> init_weights(const ModelConfig& config, uint64_t seed) {
  config.validate("model");
  check_memory(config);
  torch::manual_seed(seed);
  std::map<std::string, at::Tensor> out;
  {
    LlamaForCausalLM llm(config.llm);
    collect(out, "llm.", *llm);
  }
  {
    VisionTower tower(config.vision_tower);
    for (auto& [name, t] : tower->official_state_dict()) {
      out["vision_tower." + name] = t.detach().to(torch::kBFloat16);
    }
  }
  const VisionTowerConfig& v = config.vision_tower;
  DepthTransformer depth(config.depth_transformer, v.quantizer.depth, v.quantizer.codebook_size,
                         v.vision.hidden_size, config.llm.hidden_size);
  collect(out, "vision_tower.rqtransformer.", *depth);
  MultimodalProjector projector(v.vision.hidden_size, config.llm.hidden_size);
  collect(out, "mm_projector.", *projector);
  return out;
}

}  // namespace vilau
