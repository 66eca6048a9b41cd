#include "vilau/io/safetensors.h"

#include <torch/torch.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "mapped_file.h"
#include "vilau/core/error.h"
#include "vilau/io/atomic_file.h"

namespace vilau::io {

namespace {

constexpr std::pair<DType, c10::ScalarType> kScalarTypes[] = {
    {DType::F64, c10::ScalarType::Double}, {DType::F32, c10::ScalarType::Float},
    {DType::F16, c10::ScalarType::Half},   {DType::BF16, c10::ScalarType::BFloat16},
    {DType::I64, c10::ScalarType::Long},   {DType::I32, c10::ScalarType::Int},
    {DType::I16, c10::ScalarType::Short},  {DType::I8, c10::ScalarType::Char},
    {DType::U8, c10::ScalarType::Byte},    {DType::BOOL, c10::ScalarType::Bool},
};

}  // namespace

c10::ScalarType to_scalar_type(DType dtype) { return kScalarTypes[static_cast<int>(dtype)].second; }

DType from_scalar_type(c10::ScalarType type) {
  for (const auto& [dtype, scalar] : kScalarTypes) {
    if (scalar == type) {
      return dtype;
    }
  }
  std::string known;
  for (const auto& entry : kScalarTypes) {
    known += (known.empty() ? "" : ", ") + std::string(dtype_name(entry.first));
  }
  throw FormatError(
      describe("safetensors", "unsupported tensor dtype", "one of " + known, c10::toString(type)));
}

SafetensorsFile::SafetensorsFile(std::string path, std::shared_ptr<MappedFile> map,
                                 SafetensorsHeader header)
    : path_(std::move(path)), map_(std::move(map)), header_(std::move(header)) {
  for (size_t i = 0; i < header_.tensors.size(); ++i) {
    index_[header_.tensors[i].name] = i;
  }
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  auto map = std::make_shared<MappedFile>(path);
  SafetensorsHeader header = parse_safetensors_header(map->data(), map->size(), map->size(), path);
  return SafetensorsFile(path, std::move(map), std::move(header));
}

uint64_t SafetensorsFile::file_size() const { return map_->size(); }

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

at::Tensor SafetensorsFile::view(const TensorInfo& info) const {
  const auto options = torch::TensorOptions().dtype(to_scalar_type(info.dtype));
  char* ptr = const_cast<char*>(map_->data()) + header_.data_start + info.begin;
  if (info.begin == info.end) {
    return torch::empty(info.shape, options);
  }
  if (reinterpret_cast<uintptr_t>(ptr) % static_cast<uintptr_t>(dtype_size(info.dtype)) != 0) {
    at::Tensor copy = torch::empty(info.shape, options);
    std::memcpy(copy.data_ptr(), ptr, info.end - info.begin);
    return copy;
  }
  auto keep_alive = map_;
  return torch::from_blob(
      ptr, info.shape, [keep_alive](void*) {}, options);
}

at::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const TensorInfo* info = find(name);
  if (info == nullptr) {
    throw IoError(describe(path_, "no tensor named '" + name + "'"));
  }
  return view(*info);
}

std::map<std::string, at::Tensor> SafetensorsFile::load_all() const {
  map_->prefetch();
  std::map<std::string, at::Tensor> out;
  for (const TensorInfo& info : header_.tensors) {
    out.emplace(info.name, view(info));
  }
  return out;
}

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    header["__metadata__"] = metadata;
  }
  std::vector<at::Tensor> contiguous;
  contiguous.reserve(tensors.size());
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__" || header.contains(name)) {
      throw FormatError(describe(path, "cannot save tensor '" + name + "'", "a unique name",
                                 name == "__metadata__" ? "the reserved name" : "a duplicate"));
    }
    const DType dtype = from_scalar_type(tensor.scalar_type());
    contiguous.push_back(tensor.detach().to(torch::kCPU).contiguous());
    const uint64_t bytes = static_cast<uint64_t>(contiguous.back().nbytes());
    header[name] = {{"dtype", dtype_name(dtype)},
                    {"shape", tensor.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data section 8-byte aligned

  AtomicFile file(path);
  const uint64_t header_len = text.size();
  file.write(&header_len, sizeof header_len);
  file.write(text);
  for (const at::Tensor& t : contiguous) {
    file.write(t.data_ptr(), t.nbytes());
  }
  file.commit();
}

}  // namespace vilau::io
