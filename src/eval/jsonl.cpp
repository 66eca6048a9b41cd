#include "vilau/eval/jsonl.h"

#include <fstream>

#include "vilau/core/error.h"
#include "vilau/core/file.h"
#include "vilau/io/atomic_file.h"

namespace vilau::eval {

std::vector<nlohmann::json> read_jsonl(const std::string& path, const std::string& what) {
  std::vector<nlohmann::json> rows;
  for (JsonlRow& row : read_jsonl_rows(path, what)) {
    rows.push_back(std::move(row.value));
  }
  return rows;
}

std::vector<JsonlRow> read_jsonl_rows(const std::string& path, const std::string& what) {
  check_regular_file(path, what);
  std::ifstream in(path);
  if (!in) {
    throw IoError(describe(path, "cannot open", what, "a file that cannot be read"));
  }
  std::vector<JsonlRow> rows;
  std::string line;
  for (size_t number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) {
      continue;
    }
    const std::string where = path + ":" + std::to_string(number);
    nlohmann::json row;
    try {
      row = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw FormatError(describe(where, "invalid JSON", what, e.what()));
    }
    if (!row.is_object()) {
      throw FormatError(describe(where, "line", "a JSON object", row.type_name()));
    }
    rows.push_back({number, std::move(row)});
  }
  return rows;
}

void write_jsonl(const std::string& path, const std::vector<nlohmann::json>& rows) {
  std::string text;
  for (const nlohmann::json& row : rows) {
    text += row.dump();
    text += '\n';
  }
  io::write_file_atomic(path, text);
}

std::string jsonl_string(const nlohmann::json& row, const char* key, const std::string& where) {
  const auto it = row.find(key);
  if (it == row.end() || !it->is_string()) {
    throw FormatError(describe(where, std::string("key '") + key + "'", "a string",
                               it == row.end() ? "nothing" : it->type_name()));
  }
  return it->get<std::string>();
}

}  // namespace vilau::eval
