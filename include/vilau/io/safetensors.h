#pragma once
// safetensors files: the header (safetensors_header.h), then the raw little-endian tensor
// bytes. Reading maps the file and hands out zero-copy CPU tensors; writing goes to a
// temporary file renamed into place.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "vilau/io/safetensors_header.h"

namespace vilau::io {

c10::ScalarType to_scalar_type(DType dtype);
DType from_scalar_type(c10::ScalarType type);  // FormatError for types safetensors lacks

class MappedFile;

// A memory-mapped safetensors file. Tensors handed out keep the mapping alive.
class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::string& path);

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  uint64_t file_size() const;
  const TensorInfo* find(const std::string& name) const;

  // A CPU tensor viewing the mapped bytes (copied only when the offset is misaligned for
  // the dtype). Read-only in spirit: writing to it is undefined. IoError if absent.
  at::Tensor tensor(const std::string& name) const;
  // Every tensor, by name.
  std::map<std::string, at::Tensor> load_all() const;

 private:
  SafetensorsFile(std::string path, std::shared_ptr<MappedFile> map, SafetensorsHeader header);
  at::Tensor view(const TensorInfo& info) const;
  std::string path_;
  std::shared_ptr<MappedFile> map_;
  SafetensorsHeader header_;
  std::map<std::string, size_t> index_;
};

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Writes tensors (any device, any layout; saved contiguous) in the given order, atomically.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace vilau::io
