#pragma once
// The root of every vilau YAML file. Each section is optional, so a file may hold just a
// model preset, just sampling settings, or a whole run that extends both.
#include <optional>
#include <string>
#include <vector>

#include "vilau/core/config.h"
#include "vilau/data/config.h"
#include "vilau/infer/sampling.h"
#include "vilau/model/config.h"
#include "vilau/train/config.h"

namespace vilau {

struct Config {
  std::optional<ModelConfig> model;
  std::optional<SamplingConfig> sampling;
  std::optional<TrainConfig> train;
  std::optional<data::DataConfig> data;

  template <class V>
  void visit(V& v) {
    v.field("model", model);
    v.field("sampling", sampling);
    v.field("train", train);
    v.field("data", data);
  }
  void validate() const;
};

// load_config<Config> followed by validate(); errors name `path`.
Config load_run_config(const std::string& path, const std::vector<std::string>& overrides = {});

}  // namespace vilau
