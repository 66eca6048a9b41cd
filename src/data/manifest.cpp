#include "vilau/data/manifest.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "vilau/core/error.h"
#include "vilau/core/file.h"
#include "vilau/data/tar_reader.h"

namespace vilau::data {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string strip(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  const size_t begin = s.find_first_not_of(ws);
  return begin == std::string::npos ? "" : s.substr(begin, s.find_last_not_of(ws) - begin + 1);
}

// A record that cannot become a sample: thrown inside this file, turned into a BadEntry.
struct Rejected {
  std::string reason;
  std::string message;
};

std::string resolve(const fs::path& base, const std::string& path) {
  const fs::path p(path);
  return (p.is_absolute() ? p : base / p).lexically_normal().string();
}

std::string string_field(const json& record, const char* key) {
  const auto it = record.find(key);
  if (it == record.end()) {
    return {};
  }
  if (!it->is_string()) {
    throw Rejected{"bad_record", std::string("'") + key + "' must be a string, found " +
                                     std::string(it->type_name())};
  }
  return it->get<std::string>();
}

// The official generation data reads "sharegpt4v" or "prompt"; "caption" comes first.
std::string caption_of(const json& record) {
  for (const char* key : {"caption", "prompt", "sharegpt4v"}) {
    if (record.contains(key)) {
      const std::string caption = string_field(record, key);
      if (strip(caption).empty()) {
        throw Rejected{"empty_caption", std::string("'") + key + "' is empty"};
      }
      return caption;
    }
  }
  throw Rejected{"bad_record", "expected a 'caption' (or 'prompt', 'sharegpt4v') string"};
}

void check_conversations(const json& conversations) {
  if (!conversations.is_array() || conversations.size() < 2) {
    throw Rejected{"bad_record", "'conversations' must be a list of at least 2 turns"};
  }
  for (size_t i = 0; i < conversations.size(); ++i) {
    const json& turn = conversations[i];
    const std::string at = "conversations[" + std::to_string(i) + "]";
    if (!turn.is_object() || !turn.contains("from") || !turn.contains("value") ||
        !turn["from"].is_string() || !turn["value"].is_string()) {
      throw Rejected{"bad_record", at + " must be {\"from\": ..., \"value\": ...} strings"};
    }
    const std::string from = turn["from"].get<std::string>();
    if (from != "human" && from != "gpt") {
      throw Rejected{"bad_record", at + ".from must be 'human' or 'gpt', found '" + from + "'"};
    }
  }
}

// Fills `entry` from a JSON record; `has_image` says a tar shard provides the image.
void fill_entry(const json& record, const DatasetSpec& spec, const fs::path& base, bool has_image,
                SampleEntry& entry) {
  if (!record.is_object()) {
    throw Rejected{"bad_record",
                   "expected a JSON object, found " + std::string(record.type_name())};
  }
  if (record.contains("image")) {
    const json& image = record["image"];
    if (image.is_string()) {
      entry.images.push_back(resolve(base, image.get<std::string>()));
    } else if (image.is_array() && !image.empty() &&
               std::all_of(image.begin(), image.end(),
                           [](const json& j) { return j.is_string(); })) {
      for (const json& j : image) {
        entry.images.push_back(resolve(base, j.get<std::string>()));
      }
    } else {
      throw Rejected{"bad_record", "'image' must be a path or a non-empty list of paths"};
    }
  }
  if (record.contains("video")) {
    entry.video = resolve(base, string_field(record, "video"));
  }
  const bool image = has_image || !entry.images.empty();
  switch (spec.task) {
    case Task::understanding:
      if (!record.contains("conversations")) {
        throw Rejected{"bad_record", "expected 'conversations' for task understanding"};
      }
      entry.conversations = record["conversations"];
      check_conversations(entry.conversations);
      break;
    case Task::t2i:
    case Task::tower:
      entry.caption = caption_of(record);
      if (!image || entry.images.size() > 1) {
        throw Rejected{"bad_record",
                       "expected one 'image' for task " + std::string(task_name(spec.task))};
      }
      break;
    case Task::t2v:
      entry.caption = caption_of(record);
      if (entry.video.empty()) {
        throw Rejected{"bad_record", "expected a 'video' (file or frame folder) for task t2v"};
      }
      break;
  }
  if (!entry.video.empty() && image) {
    throw Rejected{"bad_record", "a sample has either 'image' or 'video', not both"};
  }
}

void add(Manifest& out, SampleEntry entry, const std::function<void(SampleEntry&)>& fill) {
  try {
    fill(entry);
    out.samples.push_back(std::move(entry));
  } catch (const Rejected& r) {
    out.bad.push_back({entry.where, r.reason, r.message});
  }
}

Manifest read_json_manifest(const DatasetSpec& spec) {
  check_regular_file(spec.path, "a JSON or JSONL manifest");
  std::ifstream in(spec.path, std::ios::binary);
  if (!in) {
    throw IoError(describe(spec.path, "cannot open manifest", "a JSON or JSONL file",
                           "a file that cannot be read"));
  }
  std::stringstream text;
  text << in.rdbuf();
  const std::string contents = text.str();
  const fs::path base = fs::path(spec.path).parent_path();
  Manifest out;
  const size_t first = contents.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && contents[first] == '[') {
    // A JSON array cannot be resynchronised after a syntax error: the whole file is bad.
    json records;
    try {
      records = json::parse(contents);
    } catch (const json::exception& e) {
      throw FormatError(describe(spec.path, "invalid JSON", "a JSON array of samples", e.what()));
    }
    for (size_t i = 0; i < records.size(); ++i) {
      SampleEntry entry;
      entry.where = spec.path + "[" + std::to_string(i) + "]";
      add(out, std::move(entry),
          [&](SampleEntry& e) { fill_entry(records[i], spec, base, false, e); });
    }
    return out;
  }
  std::istringstream lines(contents);
  std::string line;
  for (int64_t number = 1; std::getline(lines, line); ++number) {
    if (strip(line).empty()) {
      continue;
    }
    SampleEntry entry;
    entry.where = spec.path + ":" + std::to_string(number);
    add(out, std::move(entry), [&](SampleEntry& e) {
      json record;
      try {
        record = json::parse(line);
      } catch (const json::exception& err) {
        throw Rejected{"malformed_json", err.what()};
      }
      fill_entry(record, spec, base, false, e);
    });
  }
  return out;
}

bool is_image_ext(const std::string& ext) {
  return ext == "jpg" || ext == "jpeg" || ext == "png" || ext == "webp" || ext == "bmp";
}

// The members of one webdataset key.
struct KeyMembers {
  std::string key;
  std::map<std::string, std::string> texts;  // ext -> contents, for json and txt
  std::string image_name;
  int64_t image_offset = -1;
};

void read_shard(const std::string& shard, const DatasetSpec& spec, Manifest& out) {
  std::vector<KeyMembers> keys;
  std::map<std::string, size_t> index;
  scan_tar(
      shard,
      [](const std::string& name) {
        const std::string ext = split_key(name).second;
        return ext == "json" || ext == "txt";
      },
      [&](const TarMember& member, const std::string& contents) {
        const auto [key, ext] = split_key(member.name);
        const auto [it, inserted] = index.emplace(key, keys.size());
        if (inserted) {
          keys.push_back({key, {}, {}, -1});
        }
        KeyMembers& k = keys[it->second];
        if (ext == "json" || ext == "txt") {
          k.texts[ext] = contents;
        } else if (is_image_ext(ext) && k.image_offset < 0) {
          k.image_name = member.name;
          k.image_offset = member.offset;
        }
      });
  const fs::path base = fs::path(shard).parent_path();
  for (const KeyMembers& k : keys) {
    SampleEntry entry;
    entry.where = shard + ":" + k.key;
    entry.shard = shard;
    entry.shard_offset = k.image_offset;
    add(out, std::move(entry), [&](SampleEntry& e) {
      if (k.image_offset < 0) {
        throw Rejected{"missing_file", "no image member (" + k.key + ".jpg or .png)"};
      }
      json record = json::object();
      if (k.texts.count("json")) {
        try {
          record = json::parse(k.texts.at("json"));
        } catch (const json::exception& err) {
          throw Rejected{"malformed_json", k.key + ".json: " + err.what()};
        }
      }
      if (k.texts.count("txt") && record.is_object() && !record.contains("caption")) {
        record["caption"] = k.texts.at("txt");
      }
      if (record.is_object() && (record.contains("image") || record.contains("video"))) {
        throw Rejected{"bad_record", "the image of a shard sample is its " + k.image_name +
                                         " member; 'image'/'video' keys are not allowed"};
      }
      fill_entry(record, spec, base, true, e);
    });
  }
}

Manifest read_webdataset(const DatasetSpec& spec) {
  std::vector<std::string> shards;
  if (fs::is_directory(spec.path)) {
    for (const auto& entry : fs::directory_iterator(spec.path)) {
      if (entry.is_regular_file() && entry.path().extension() == ".tar") {
        shards.push_back(entry.path().string());
      }
    }
    std::sort(shards.begin(), shards.end());
    if (shards.empty()) {
      throw IoError(describe(spec.path, "no shards", "a folder holding .tar files", "none"));
    }
  } else {
    shards.push_back(spec.path);
  }
  Manifest out;
  for (const std::string& shard : shards) {
    read_shard(shard, spec, out);
  }
  return out;
}

}  // namespace

Manifest read_dataset(const DatasetSpec& spec) {
  return spec.format == "webdataset" ? read_webdataset(spec) : read_json_manifest(spec);
}

}  // namespace vilau::data
