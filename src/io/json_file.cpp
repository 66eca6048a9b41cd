#include "vilau/io/json_file.h"

#include "vilau/core/error.h"
#include "vilau/core/file.h"

namespace vilau::io {

nlohmann::json read_json_file(const std::string& path, const std::string& what) {
  const std::string text = read_regular_file(path, what);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(describe(path, "invalid JSON", what, e.what()));
  }
}

}  // namespace vilau::io
