#include "sentencepiece_proto.h"

#include <cstdint>

#include "vilau/core/error.h"

namespace vilau {

namespace {

// ModelProto.normalizer_spec = 3 and NormalizerSpec.add_dummy_prefix = 3 in
// sentencepiece_model.proto.
constexpr uint64_t kNormalizerSpec = 3;
constexpr uint64_t kAddDummyPrefix = 3;

struct Reader {
  const std::string& bytes;
  size_t pos;
  size_t end;
  const std::string& path;

  [[noreturn]] void corrupt(const std::string& what) const {
    throw FormatError(describe(path, "corrupt SentencePiece model", "a serialized ModelProto",
                               what + " at byte " + std::to_string(pos)));
  }
  uint64_t varint() {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos >= end) {
        corrupt("a truncated varint");
      }
      const auto byte = static_cast<uint8_t>(bytes[pos++]);
      value |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) {
        return value;
      }
    }
    corrupt("an over-long varint");
  }
  // Skips the value of a field with `wire_type`; returns [begin, end) of the whole value.
  void skip(uint64_t wire_type) {
    switch (wire_type) {
      case 0:
        varint();
        return;
      case 1:
        advance(8);
        return;
      case 2:
        advance(varint());
        return;
      case 5:
        advance(4);
        return;
      default:
        corrupt("wire type " + std::to_string(wire_type));
    }
  }
  void advance(uint64_t n) {
    if (n > end - pos) {
      corrupt("a field longer than the message");
    }
    pos += n;
  }
};

void put_varint(std::string& out, uint64_t value) {
  while (value >= 0x80) {
    out.push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
}

// The NormalizerSpec bytes in [begin, end) without add_dummy_prefix, then add_dummy_prefix = 0.
std::string patch_normalizer(const std::string& bytes, size_t begin, size_t end,
                             const std::string& path) {
  Reader r{bytes, begin, end, path};
  std::string out;
  while (r.pos < r.end) {
    const size_t field_start = r.pos;
    const uint64_t tag = r.varint();
    r.skip(tag & 7);
    if ((tag >> 3) != kAddDummyPrefix) {
      out.append(bytes, field_start, r.pos - field_start);
    }
  }
  put_varint(out, kAddDummyPrefix << 3);  // varint wire type
  put_varint(out, 0);
  return out;
}

}  // namespace

std::string without_dummy_prefix(const std::string& serialized, const std::string& path) {
  Reader r{serialized, 0, serialized.size(), path};
  std::string out;
  bool patched = false;
  while (r.pos < r.end) {
    const size_t field_start = r.pos;
    const uint64_t tag = r.varint();
    if ((tag >> 3) == kNormalizerSpec && (tag & 7) == 2) {
      const uint64_t length = r.varint();
      const size_t begin = r.pos;
      r.advance(length);
      const std::string spec = patch_normalizer(serialized, begin, r.pos, path);
      put_varint(out, tag);
      put_varint(out, spec.size());
      out += spec;
      patched = true;
    } else {
      r.skip(tag & 7);
      out.append(serialized, field_start, r.pos - field_start);
    }
  }
  if (!patched) {
    throw FormatError(
        describe(path, "SentencePiece model has no normalizer_spec", "a LLaMA-style model"));
  }
  return out;
}

}  // namespace vilau
