#pragma once
// Internal: edits a serialized SentencePiece ModelProto without protobuf's generated
// classes, which Debian's libsentencepiece-dev does not ship.
#include <string>

namespace vilau {

// Returns the model with normalizer_spec.add_dummy_prefix = false, as HF's
// LlamaTokenizer(legacy=False) loads it. FormatError naming `path` if the bytes are not a
// well-formed ModelProto.
std::string without_dummy_prefix(const std::string& serialized, const std::string& path);

}  // namespace vilau
