#pragma once
// Datasets as lists of samples, read and checked before any pixel is decoded: caption
// pairs (JSONL), LLaVA conversations (a JSON array or JSONL) and webdataset tar shards
// (docs/data.md). Media paths are relative to the manifest's folder.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "vilau/data/config.h"

namespace vilau::data {

// One sample, its text checked; media are opened only when the sample is loaded.
struct SampleEntry {
  std::string where;                // "file.jsonl:12", "file.json[3]" or "shard.tar:key"
  std::string caption;              // t2i, t2v, tower
  nlohmann::json conversations;     // understanding: [{"from", "value"}, ...]
  std::vector<std::string> images;  // resolved paths, in placeholder order
  std::string video;                // a resolved video file or frame folder
  std::string shard;                // webdataset: the image is the member at shard_offset
  int64_t shard_offset = -1;
};

// A manifest entry left out, with the reason it is counted under.
struct BadEntry {
  std::string where;
  std::string reason;  // malformed_json, bad_record, empty_caption, ...
  std::string message;
};

struct Manifest {
  std::vector<SampleEntry> samples;
  std::vector<BadEntry> bad;
};

// Reads one dataset of the mixture. A manifest or shard folder that cannot be read at all
// is an IoError/FormatError; a bad entry inside it is only listed in `bad`.
Manifest read_dataset(const DatasetSpec& spec);

}  // namespace vilau::data
