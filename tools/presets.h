#pragma once
// Presets by name (configs/presets/NAME.yaml, or $VILAU_PRESET_DIR) or by file.
#include <cstdlib>
#include <filesystem>
#include <string>

#include "vilau/config.h"
#include "vilau/core/error.h"

namespace vilau::cli {

inline ModelConfig load_preset(const std::string& name) {
  std::filesystem::path file(name);
  if (!std::filesystem::exists(file)) {
    const char* env = std::getenv("VILAU_PRESET_DIR");
    file = std::filesystem::path(env != nullptr ? env : VILAU_PRESET_DIR) / (name + ".yaml");
  }
  const Config config = load_run_config(file.string());
  if (!config.model) {
    throw ConfigError(describe(file.string(), "no 'model' section", "a model preset"));
  }
  return *config.model;
}

}  // namespace vilau::cli
