#pragma once
// A checkpoint's tensors, whether in one safetensors file or sharded HF-style as
// model-0000i-of-0000n.safetensors with a model.safetensors.index.json.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "vilau/io/safetensors.h"

namespace vilau::io {

class TensorStore {
 public:
  // `path`: a .safetensors file, a .safetensors.index.json, or a folder holding
  // model.safetensors or model.safetensors.index.json. Every shard is validated, and the
  // index must list exactly the tensors its shards hold.
  static TensorStore open(const std::string& path);

  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const { return where_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;
  at::Tensor tensor(const std::string& name) const;
  std::map<std::string, at::Tensor> load_all() const;
  const std::vector<SafetensorsFile>& files() const { return files_; }
  uint64_t data_bytes() const;

 private:
  std::vector<SafetensorsFile> files_;
  std::map<std::string, size_t> where_;  // tensor name -> index into files_
};

// Saves `tensors` in `dir` as `<base>.safetensors`, or, when larger than max_shard_bytes,
// as shards plus `<base>.safetensors.index.json`, the way HF transformers does. Stale
// shards of an earlier save with the same base are removed. Each file carries
// {"format": "pt"}, which transformers insists on. Returns the files written.
std::vector<std::string> save_sharded(const std::string& dir, const NamedTensors& tensors,
                                      uint64_t max_shard_bytes, const std::string& base = "model");

}  // namespace vilau::io
