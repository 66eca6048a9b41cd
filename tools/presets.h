#pragma once
// Presets by name (configs/presets/NAME.yaml, or $VILAU_PRESET_DIR) or by file.
#include <cstdlib>
#include <filesystem>
#include <string>

#include "vilau/config.h"
#include "vilau/core/error.h"

namespace vilau::cli {

// The YAML file of a preset name, or `name` itself when it is a file.
inline std::string preset_file(const std::string& name) {
  std::filesystem::path file(name);
  if (!std::filesystem::exists(file)) {
    const char* env = std::getenv("VILAU_PRESET_DIR");
    file = std::filesystem::path(env != nullptr ? env : VILAU_PRESET_DIR) / (name + ".yaml");
  }
  return file.string();
}

inline ModelConfig load_preset(const std::string& name) {
  const std::string file = preset_file(name);
  const Config config = load_run_config(file);
  if (!config.model) {
    throw ConfigError(describe(file, "no 'model' section", "a model preset"));
  }
  return *config.model;
}

}  // namespace vilau::cli
