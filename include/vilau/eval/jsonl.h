#pragma once
// JSON Lines files as the demo's eval files use them: one object per non-empty line.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace vilau::eval {

// IoError when the file cannot be opened; FormatError naming `path:line` for a line that is
// not a JSON object. `what` says what the file should be.
std::vector<nlohmann::json> read_jsonl(const std::string& path, const std::string& what);

struct JsonlRow {
  size_t line = 0;  // 1-based, blank lines counted, so messages can name `path:line`
  nlohmann::json value;
};
// As read_jsonl, keeping each object's line number.
std::vector<JsonlRow> read_jsonl_rows(const std::string& path, const std::string& what);

// Writes `rows`, one compact object per line, atomically.
void write_jsonl(const std::string& path, const std::vector<nlohmann::json>& rows);

// The string at `key` of `row`; FormatError naming `where` and the key when it is absent.
std::string jsonl_string(const nlohmann::json& row, const char* key, const std::string& where);

}  // namespace vilau::eval
