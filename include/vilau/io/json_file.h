#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace vilau::io {

// Parses a JSON file; IoError when it cannot be opened, FormatError naming the file and
// the parser's position when it is not valid JSON. `what` says what the file should be.
nlohmann::json read_json_file(const std::string& path, const std::string& what);

}  // namespace vilau::io
