#pragma once
// Prompts for batch generation: a JSONL file of {"id": ..., "prompt": ...}, shared among
// processes by rank so that several launches split one file.
#include <cstdint>
#include <string>
#include <vector>

namespace vilau {

struct PromptEntry {
  std::string id;  // names the output file, so it must be a plain file name
  std::string prompt;
};

// FormatError naming the file and line for bad JSON, a missing field, an id that is not a
// plain file name, or a repeated id; IoError when the file cannot be read.
std::vector<PromptEntry> read_prompt_file(const std::string& path);

struct Shard {
  int64_t rank = 0;
  int64_t world = 1;
};
// RANK and WORLD_SIZE from the environment (0 and 1 when unset); ConfigError when they are
// not integers with 0 <= RANK < WORLD_SIZE.
Shard shard_from_env();
// The indices i < count with i % world == rank.
std::vector<int64_t> shard_indices(int64_t count, const Shard& shard);

}  // namespace vilau
