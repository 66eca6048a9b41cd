#include "vilau/io/json_file.h"

#include <fstream>

#include "vilau/core/error.h"

namespace vilau::io {

nlohmann::json read_json_file(const std::string& path, const std::string& what) {
  std::ifstream in(path);
  if (!in) {
    throw IoError(describe(path, "cannot open", what, "no such file"));
  }
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(describe(path, "invalid JSON", what, e.what()));
  }
}

}  // namespace vilau::io
