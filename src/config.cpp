#include "vilau/config.h"

#include "vilau/core/error.h"

namespace vilau {

void Config::validate() const {
  if (model) {
    model->validate("model");
  }
  if (sampling) {
    sampling->validate("sampling");
  }
  if (train) {
    train->validate("train");
  }
  if (data) {
    data->validate("data");
  }
}

Config load_run_config(const std::string& path, const std::vector<std::string>& overrides) {
  Config config = load_config<Config>(path, overrides);
  try {
    config.validate();
  } catch (const ConfigError& e) {
    throw ConfigError(path + ": " + e.what());
  }
  return config;
}

}  // namespace vilau
