#include "vilau/infer/prompt_file.h"

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "vilau/core/error.h"
#include "vilau/core/file.h"

namespace vilau {

namespace {

int64_t env_integer(const char* name, int64_t fallback) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return fallback;
  char* end = nullptr;
  const long long parsed = std::strtoll(value, &end, 10);
  if (*end != '\0') {
    throw ConfigError(describe(std::string("$") + name, "not an integer", "an integer",
                               std::string("'") + value + "'"));
  }
  return parsed;
}

}  // namespace

std::vector<PromptEntry> read_prompt_file(const std::string& path) {
  check_regular_file(path, "a prompts file (JSONL)");
  std::ifstream in(path);
  if (!in) {
    throw IoError(describe(path, "cannot open the prompts file"));
  }
  std::vector<PromptEntry> entries;
  std::set<std::string> seen;
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(number);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw FormatError(describe(where, "invalid JSON", "one object per line", e.what()));
    }
    if (!j.is_object() || !j.contains("id") || !j.contains("prompt") || !j["prompt"].is_string() ||
        !(j["id"].is_string() || j["id"].is_number_integer())) {
      throw FormatError(describe(where, "prompt entry",
                                 R"({"id": "name", "prompt": "text"} (id may be an integer))",
                                 line));
    }
    PromptEntry e{j["id"].is_string() ? j["id"].get<std::string>() : j["id"].dump(),
                  j["prompt"].get<std::string>()};
    if (e.id.empty() || e.id == "." || e.id == ".." ||
        e.id.find_first_of("/\\") != std::string::npos) {
      throw FormatError(describe(where, "id", "a plain file name", "'" + e.id + "'"));
    }
    if (!seen.insert(e.id).second) {
      throw FormatError(
          describe(where, "id", "unique ids (each names an output)", "'" + e.id + "' again"));
    }
    entries.push_back(std::move(e));
  }
  return entries;
}

Shard shard_from_env() {
  const Shard shard{env_integer("RANK", 0), env_integer("WORLD_SIZE", 1)};
  if (shard.world < 1 || shard.rank < 0 || shard.rank >= shard.world) {
    throw ConfigError(describe("$RANK/$WORLD_SIZE", "invalid shard", "0 <= RANK < WORLD_SIZE",
                               std::to_string(shard.rank) + "/" + std::to_string(shard.world)));
  }
  return shard;
}

std::vector<int64_t> shard_indices(int64_t count, const Shard& shard) {
  std::vector<int64_t> out;
  for (int64_t i = shard.rank; i < count; i += shard.world) out.push_back(i);
  return out;
}

}  // namespace vilau
