#pragma once
// The whole VILA-U model: vision tower, projector, LLM and depth transformer.
#include <cstdint>
#include <string>

#include "vilau/core/config.h"
#include "vilau/llm/config.h"
#include "vilau/vision/config.h"

namespace vilau {

struct ModelConfig {
  std::string name;
  VisionTowerConfig vision_tower;
  std::string projector = "mlp2x_gelu";
  LlmConfig llm;
  DepthTransformerConfig depth_transformer;
  int64_t num_video_frames = 8;

  template <class V>
  void visit(V& v) {
    v.field("name", name, required);
    v.field("vision_tower", vision_tower, required);
    v.field("projector", projector);
    v.field("llm", llm, required);
    v.field("depth_transformer", depth_transformer, required);
    v.field("num_video_frames", num_video_frames);
  }
  // Checks each section and the constraints between them; throws ConfigError naming the key.
  void validate(const std::string& path = "model") const;
};

}  // namespace vilau
