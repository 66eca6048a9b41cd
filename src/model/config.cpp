#include "vilau/model/config.h"

namespace vilau {

void ModelConfig::validate(const std::string& path) const {
  vision_tower.validate(path + ".vision_tower");
  llm.validate(path + ".llm");
  depth_transformer.validate(path + ".depth_transformer");
  config_check(projector == "mlp2x_gelu", path + ".projector", "\"mlp2x_gelu\"",
               "\"" + projector + "\"");
  config_check(num_video_frames > 0, path + ".num_video_frames", "a positive count",
               std::to_string(num_video_frames));
}

}  // namespace vilau
