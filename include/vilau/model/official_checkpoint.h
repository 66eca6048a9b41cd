#pragma once
// The official VILA-U checkpoint folder (SPEC §5.1):
//   config.json, llm/ (LLaMA config, generation_config, tokenizer files, sharded weights),
//   vision_tower/ (config with rqvaesiglip and rqtransformer sections), mm_projector/.
// Reading parses every config into a ModelConfig; sizes the JSON does not hold (the SigLIP
// towers) come from the tensor headers. Export writes the same layout back, so the
// official Python code loads what vilau trains.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "vilau/io/tensor_store.h"
#include "vilau/model/config.h"
#include "vilau/model/state_dict_adapter.h"

namespace vilau {

// What a checkpoint holds compared with what its config implies.
struct TensorCheck {
  std::vector<std::string> missing;     // expected, absent
  std::vector<std::string> unexpected;  // present, not expected
  std::vector<std::string> mismatched;  // "name: expected [..], found [..]"
  bool ok() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  std::string summary(size_t max_names = 10) const;
};

class OfficialCheckpoint {
 public:
  // Parses the configs and opens every weight file; FormatError/IoError name the file.
  static OfficialCheckpoint open(const std::string& root);

  const std::string& root() const { return root_; }
  const ModelConfig& config() const { return config_; }
  // The JSON configs as found: "config", "llm", "vision_tower", "mm_projector".
  const nlohmann::json& raw(const std::string& which) const { return raw_.at(which); }

  std::vector<std::string> names() const;  // ours, sorted
  const io::TensorInfo& info(const std::string& name) const;
  at::Tensor tensor(const std::string& name) const;  // zero-copy CPU view
  std::map<std::string, at::Tensor> load_all() const;
  const io::TensorStore& store(Component component) const;

  // Compares every expected tensor of config() with the headers.
  TensorCheck check() const;

 private:
  std::string root_;
  ModelConfig config_;
  std::map<std::string, nlohmann::json> raw_;
  std::map<Component, std::shared_ptr<io::TensorStore>> stores_;
};

// The Google SigLIP checkpoint with this vision geometry ("google/siglip-large-patch16-256",
// "google/siglip-so400m-patch14-384", ...), which exports record as the tower's
// pretrained_model because the official loader fetches SigLIP's config by that name; "" for
// geometries Google never released.
std::string siglip_model_name(const SiglipVisionConfig& vision);

struct ExportOptions {
  uint64_t max_shard_bytes = 5ull << 30;  // what transformers 4.36 used for llm/
  // A checkpoint to take the tokenizer files and config fields vilau does not model from.
  std::string source;
};

// Writes `weights` (our names) for `config` in the official layout under `root`.
// Checks names and shapes first (ShapeError listing the differences).
void export_official(const std::string& root, const ModelConfig& config,
                     const std::map<std::string, at::Tensor>& weights,
                     const ExportOptions& options = {});

}  // namespace vilau
