#pragma once
// Internal: the official JSON configs <-> ModelConfig.
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "vilau/model/config.h"

namespace vilau {

// Shape of an official vision_tower tensor, or nullopt when absent.
using ShapeLookup = std::function<std::optional<std::vector<int64_t>>(const std::string&)>;

// `raw` holds "config", "llm", "vision_tower", "mm_projector" and optionally
// "preprocessor"; `root` names the folder in messages.
ModelConfig parse_official_configs(const std::map<std::string, nlohmann::json>& raw,
                                   const ShapeLookup& vision_shape, const std::string& root);

// The four JSON configs for `config`, starting from `source` ones when given so that
// fields vilau does not model survive a round trip.
std::map<std::string, nlohmann::json> make_official_configs(
    const ModelConfig& config, const std::map<std::string, nlohmann::json>& source);

}  // namespace vilau
