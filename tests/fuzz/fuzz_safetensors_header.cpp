// Any byte string either parses into a header whose tensors tile the data section, or is
// rejected with vilau::FormatError. Crashes, hangs, sanitizer reports and other exception
// types are bugs.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "vilau/core/error.h"
#include "vilau/io/safetensors_header.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto header = vilau::io::parse_safetensors_header(reinterpret_cast<const char*>(data),
                                                            size, size, "fuzz-input");
    uint64_t cursor = 0;
    for (const auto& t : header.tensors) {
      if (t.begin != cursor || t.end < t.begin ||
          static_cast<uint64_t>(t.numel() * vilau::io::dtype_size(t.dtype)) != t.end - t.begin) {
        std::abort();
      }
      cursor = t.end;
    }
    if (header.data_start + cursor != size) {
      std::abort();
    }
  } catch (const vilau::FormatError&) {
  }
  return 0;
}
