#include "vilau/io/safetensors_header.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "vilau/core/error.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors stores little-endian data; big-endian hosts would need byte swaps");

namespace vilau::io {

namespace {

// The reference implementation refuses headers above 100 MB; so do we, before allocating.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

struct DTypeEntry {
  DType dtype;
  const char* name;
  int64_t size;
};

constexpr DTypeEntry kDTypes[] = {
    {DType::F64, "F64", 8},   {DType::F32, "F32", 4}, {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2}, {DType::I64, "I64", 8}, {DType::I32, "I32", 4},
    {DType::I16, "I16", 2},   {DType::I8, "I8", 1},   {DType::U8, "U8", 1},
    {DType::BOOL, "BOOL", 1},
};

const DTypeEntry& entry(DType dtype) { return kDTypes[static_cast<int>(dtype)]; }

std::string known_dtypes() {
  std::string out;
  for (const auto& e : kDTypes) {
    out += (out.empty() ? "" : ", ") + std::string(e.name);
  }
  return out;
}

uint64_t read_u64_le(const char* p) {
  uint64_t v = 0;
  std::memcpy(&v, p, sizeof v);
  return v;
}

TensorInfo parse_tensor(const std::string& name, const nlohmann::json& spec,
                        const std::string& where) {
  const std::string tensor = where + ": tensor '" + name + "'";
  if (!spec.is_object()) {
    throw FormatError(
        describe(tensor, "entry", "an object with dtype, shape, data_offsets", spec.type_name()));
  }
  for (const auto& [key, value] : spec.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets") {
      throw FormatError(
          describe(tensor, "unknown field '" + key + "'", "dtype, shape, data_offsets"));
    }
  }
  TensorInfo info;
  info.name = name;

  const auto dtype = spec.find("dtype");
  if (dtype == spec.end() || !dtype->is_string()) {
    throw FormatError(
        describe(tensor, "dtype", "a string", dtype == spec.end() ? "nothing" : dtype->dump()));
  }
  const std::string dtype_text = dtype->get<std::string>();
  const auto* found = std::find_if(std::begin(kDTypes), std::end(kDTypes),
                                   [&](const DTypeEntry& e) { return dtype_text == e.name; });
  if (found == std::end(kDTypes)) {
    throw FormatError(
        describe(tensor, "unknown dtype", "one of " + known_dtypes(), "'" + dtype_text + "'"));
  }
  info.dtype = found->dtype;

  const auto shape = spec.find("shape");
  if (shape == spec.end() || !shape->is_array()) {
    throw FormatError(describe(tensor, "shape", "a list of sizes",
                               shape == spec.end() ? "nothing" : shape->dump()));
  }
  uint64_t numel = 1;
  for (const auto& dim : *shape) {
    if (!dim.is_number_unsigned()) {
      throw FormatError(describe(tensor, "shape", "non-negative integer sizes", shape->dump()));
    }
    const uint64_t d = dim.get<uint64_t>();
    if (d > static_cast<uint64_t>(INT64_MAX) || __builtin_mul_overflow(numel, d, &numel)) {
      throw FormatError(describe(tensor, "shape", "a size that fits in 64 bits", shape->dump()));
    }
    info.shape.push_back(static_cast<int64_t>(d));
  }

  const auto offsets = spec.find("data_offsets");
  if (offsets == spec.end() || !offsets->is_array() || offsets->size() != 2 ||
      !(*offsets)[0].is_number_unsigned() || !(*offsets)[1].is_number_unsigned()) {
    throw FormatError(describe(tensor, "data_offsets", "[begin, end] as non-negative integers",
                               offsets == spec.end() ? "nothing" : offsets->dump()));
  }
  info.begin = (*offsets)[0].get<uint64_t>();
  info.end = (*offsets)[1].get<uint64_t>();
  if (info.end < info.begin) {
    throw FormatError(describe(tensor, "data_offsets", "begin <= end", offsets->dump()));
  }
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(numel, static_cast<uint64_t>(found->size), &bytes) ||
      bytes != info.end - info.begin) {
    throw FormatError(describe(
        tensor, "shape " + shape_text(info.shape) + " of " + found->name,
        std::to_string(numel) + " elements x " + std::to_string(found->size) +
            " bytes = " + std::to_string(bytes) + " bytes",
        std::to_string(info.end - info.begin) + " bytes in data_offsets " + offsets->dump()));
  }
  return info;
}

}  // namespace

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    out += (i ? ", " : "") + std::to_string(shape[i]);
  }
  return out + "]";
}

const char* dtype_name(DType dtype) { return entry(dtype).name; }
int64_t dtype_size(DType dtype) { return entry(dtype).size; }

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) {
    n *= d;
  }
  return n;
}

SafetensorsHeader parse_safetensors_header(const char* bytes, uint64_t size, uint64_t file_size,
                                           const std::string& path) {
  if (size < 8 || file_size < 8) {
    throw FormatError(describe(path, "file too short", "at least 8 bytes (the header length)",
                               std::to_string(file_size) + " bytes"));
  }
  const uint64_t header_len = read_u64_le(bytes);
  if (header_len > file_size - 8 || header_len > size - 8) {
    throw FormatError(describe(path, "header longer than the file",
                               "at most " + std::to_string(file_size - 8) + " header bytes",
                               "a header length of " + std::to_string(header_len)));
  }
  if (header_len > kMaxHeaderBytes) {
    throw FormatError(describe(path, "header too large", "at most 100 MB",
                               std::to_string(header_len) + " bytes"));
  }

  // nlohmann keeps the last of two equal keys silently; a duplicate tensor name must fail.
  std::set<std::string> names;
  nlohmann::json::parser_callback_t reject_duplicates =
      [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
        if (depth == 1 && event == nlohmann::json::parse_event_t::key) {
          const std::string name = parsed.get<std::string>();
          if (!names.insert(name).second) {
            throw FormatError(describe(path, "duplicate tensor name '" + name + "' in the header"));
          }
        }
        return true;
      };
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes + 8, bytes + 8 + header_len, reject_duplicates);
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(describe(path, "invalid JSON header", {}, e.what()));
  }
  if (!header.is_object()) {
    throw FormatError(describe(path, "header", "a JSON object", header.type_name()));
  }

  SafetensorsHeader out;
  out.data_start = 8 + header_len;
  for (const auto& [name, spec] : header.items()) {
    if (name == "__metadata__") {
      if (!spec.is_object()) {
        throw FormatError(describe(path, "__metadata__", "an object of strings", spec.type_name()));
      }
      for (const auto& [key, value] : spec.items()) {
        if (!value.is_string()) {
          throw FormatError(describe(path, "__metadata__ '" + key + "'", "a string", value.dump()));
        }
        out.metadata[key] = value.get<std::string>();
      }
      continue;
    }
    out.tensors.push_back(parse_tensor(name, spec, path));
  }

  // The data section must be covered exactly: no gaps, no overlaps, nothing past the end.
  std::sort(out.tensors.begin(), out.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  const uint64_t data_size = file_size - out.data_start;
  uint64_t cursor = 0;
  for (const TensorInfo& t : out.tensors) {
    if (t.end > data_size) {
      throw FormatError(describe(path + ": tensor '" + t.name + "'", "data_offsets out of range",
                                 "an end within the " + std::to_string(data_size) + " data bytes",
                                 std::to_string(t.end)));
    }
    if (t.begin < cursor) {
      throw FormatError(describe(path + ": tensor '" + t.name + "'",
                                 "data overlaps the previous tensor",
                                 "begin >= " + std::to_string(cursor), std::to_string(t.begin)));
    }
    if (t.begin > cursor) {
      throw FormatError(describe(path + ": tensor '" + t.name + "'", "gap in the data section",
                                 "begin = " + std::to_string(cursor), std::to_string(t.begin)));
    }
    cursor = t.end;
  }
  if (cursor != data_size) {
    throw FormatError(describe(path, "data section has bytes no tensor covers",
                               std::to_string(cursor) + " data bytes", std::to_string(data_size)));
  }
  return out;
}

}  // namespace vilau::io
