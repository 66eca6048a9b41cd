#pragma once
// The safetensors header, without LibTorch: an 8-byte little-endian header length, then a
// JSON object mapping tensor names to {dtype, shape, data_offsets}, plus an optional
// "__metadata__" string map. Kept free of torch so that the fuzzer builds with clang alone.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace vilau::io {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

const char* dtype_name(DType dtype);  // "BF16"
int64_t dtype_size(DType dtype);      // bytes per element

// "[2, 3]", for messages and tables.
std::string shape_text(const std::vector<int64_t>& shape);

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data section
  uint64_t end = 0;
  int64_t numel() const;
};

struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // in data-offset order
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // 8 + header length
};

// Parses and validates a header against the size of its file: the JSON, every dtype and
// shape, offsets that are in range, contiguous, without gaps or overlaps, names unique.
// `path` is only used in messages. Throws FormatError. Exposed for the fuzzer.
SafetensorsHeader parse_safetensors_header(const char* bytes, uint64_t size, uint64_t file_size,
                                           const std::string& path);

}  // namespace vilau::io
