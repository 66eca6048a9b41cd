#pragma once
// The one place that knows how official VILA-U tensor names map to ours, and which
// tensors (with which shapes) a config implies.
//
// The official folder splits the model into llm/, vision_tower/ and mm_projector/, each
// with its own names (SPEC §5.3). Our modules declare tensors by those canonical names
// under one prefix per component: "llm.", "vision_tower.", "mm_projector.".
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "vilau/model/config.h"

namespace vilau {

enum class Component { llm, vision_tower, mm_projector };
constexpr Component kComponents[] = {Component::llm, Component::vision_tower,
                                     Component::mm_projector};

const char* component_folder(Component component);  // "llm", "vision_tower", "mm_projector"

// "rqvaesiglip.logit_scale" (an alias the official code saves) becomes the canonical
// "rqvaesiglip.siglip_model.logit_scale".
std::string to_vilau_name(Component component, const std::string& official_name);
std::pair<Component, std::string> to_official_name(const std::string& vilau_name);

struct ExpectedTensor {
  std::string name;  // ours
  std::vector<int64_t> shape;
  bool parameter = true;  // false for buffers (EMA statistics of the codebooks)
};

// Every tensor of the official checkpoint for `config`, in checkpoint order.
std::vector<ExpectedTensor> expected_tensors(const ModelConfig& config);

// The component a tensor (our name) counts toward: "llm", "mm_projector",
// "vision_tower.siglip_vision", ..., "vision_tower.depth_transformer".
std::string component_group(const std::string& vilau_name);

// Parameter and buffer counts per component (and the depth transformer, which the
// official layout stores inside vision_tower/), computed from shapes alone.
struct ComponentCount {
  std::string component;
  int64_t parameters = 0;
  int64_t buffers = 0;
};
std::vector<ComponentCount> count_parameters(const ModelConfig& config);

}  // namespace vilau
