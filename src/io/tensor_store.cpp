#include "vilau/io/tensor_store.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "vilau/core/error.h"
#include "vilau/io/atomic_file.h"
#include "vilau/io/json_file.h"

namespace fs = std::filesystem;

namespace vilau::io {

namespace {

std::string shard_name(const std::string& base, size_t i, size_t n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "-%05zu-of-%05zu.safetensors", i, n);
  return base + buf;
}

}  // namespace

TensorStore TensorStore::open(const std::string& path) {
  fs::path p(path);
  if (fs::is_directory(p)) {
    if (fs::exists(p / "model.safetensors.index.json")) {
      p /= "model.safetensors.index.json";
    } else if (fs::exists(p / "model.safetensors")) {
      p /= "model.safetensors";
    } else {
      throw IoError(describe(path, "no checkpoint in folder",
                             "model.safetensors or model.safetensors.index.json", "neither"));
    }
  }
  TensorStore store;
  const std::string name = p.filename().string();
  const bool is_index = name.size() > 5 && name.compare(name.size() - 5, 5, ".json") == 0;
  if (!is_index) {
    store.files_.push_back(SafetensorsFile::open(p.string()));
    for (const TensorInfo& t : store.files_[0].tensors()) {
      store.where_[t.name] = 0;
    }
    return store;
  }

  const nlohmann::json index = read_json_file(p.string(), "a safetensors index");
  const auto map = index.find("weight_map");
  if (!index.is_object() || map == index.end() || !map->is_object()) {
    throw FormatError(
        describe(p.string(), "index", "an object with a \"weight_map\" object", "none"));
  }
  std::map<std::string, std::string> listed;  // tensor -> shard file
  std::map<std::string, size_t> shard_ids;
  for (const auto& [tensor, file] : map->items()) {
    if (!file.is_string()) {
      throw FormatError(
          describe(p.string(), "weight_map['" + tensor + "']", "a file name", file.dump()));
    }
    listed[tensor] = file.get<std::string>();
    // A shard is a file of this folder: no path may lead out of it (as the released
    // indexes, which name bare files).
    const fs::path name(listed[tensor]);
    if (name.empty() || name.is_absolute() || name.has_parent_path() || name == "." ||
        name == "..") {
      throw FormatError(describe(p.string(), "weight_map['" + tensor + "']",
                                 "the name of a shard file in this folder", file.dump()));
    }
    if (shard_ids.count(listed[tensor]) == 0) {
      const fs::path shard = p.parent_path() / listed[tensor];
      if (!fs::exists(shard)) {
        throw IoError(describe(p.string(),
                               "index points at a missing shard '" + listed[tensor] + "'",
                               "the file " + shard.string(), "no such file"));
      }
      shard_ids[listed[tensor]] = store.files_.size();
      store.files_.push_back(SafetensorsFile::open(shard.string()));
    }
  }
  for (const auto& [file, id] : shard_ids) {
    for (const TensorInfo& t : store.files_[id].tensors()) {
      const auto it = listed.find(t.name);
      if (it == listed.end() || it->second != file) {
        throw FormatError(
            describe(store.files_[id].path(), "tensor '" + t.name + "' is not in the index",
                     it == listed.end() ? "an entry in " + p.string() : "it in " + it->second,
                     "it in this shard"));
      }
      store.where_[t.name] = id;
    }
  }
  for (const auto& [tensor, file] : listed) {
    if (store.where_.count(tensor) == 0) {
      throw FormatError(describe(p.string(),
                                 "tensor '" + tensor + "' listed for shard '" + file + "'",
                                 "it in that shard", "no such tensor there"));
    }
  }
  return store;
}

std::vector<std::string> TensorStore::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& kv : where_) {
    out.push_back(kv.first);
  }
  return out;
}

const TensorInfo& TensorStore::info(const std::string& name) const {
  const auto it = where_.find(name);
  if (it == where_.end()) {
    throw IoError(describe(files_.empty() ? "checkpoint" : files_[0].path(),
                           "no tensor named '" + name + "'"));
  }
  return *files_[it->second].find(name);
}

at::Tensor TensorStore::tensor(const std::string& name) const {
  info(name);  // throws with the file name when absent
  return files_[where_.at(name)].tensor(name);
}

std::map<std::string, at::Tensor> TensorStore::load_all() const {
  std::map<std::string, at::Tensor> out;
  for (const SafetensorsFile& file : files_) {
    out.merge(file.load_all());
  }
  return out;
}

uint64_t TensorStore::data_bytes() const {
  uint64_t total = 0;
  for (const SafetensorsFile& file : files_) {
    for (const TensorInfo& t : file.tensors()) {
      total += t.end - t.begin;
    }
  }
  return total;
}

std::vector<std::string> save_sharded(const std::string& dir, const NamedTensors& tensors,
                                      uint64_t max_shard_bytes, const std::string& base) {
  fs::create_directories(dir);
  // Greedy packing in the given order, as transformers' shard_checkpoint does.
  std::vector<NamedTensors> shards(1);
  uint64_t current = 0, total = 0;
  for (const auto& named : tensors) {
    const uint64_t bytes = named.second.nbytes();
    if (current > 0 && current + bytes > max_shard_bytes) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(named);
    current += bytes;
    total += bytes;
  }
  const std::map<std::string, std::string> metadata{{"format", "pt"}};
  std::vector<std::string> written;
  if (shards.size() == 1) {
    written.push_back(base + ".safetensors");
    save_safetensors((fs::path(dir) / written[0]).string(), shards[0], metadata);
  } else {
    nlohmann::json weight_map = nlohmann::json::object();
    for (size_t i = 0; i < shards.size(); ++i) {
      written.push_back(shard_name(base, i + 1, shards.size()));
      save_safetensors((fs::path(dir) / written.back()).string(), shards[i], metadata);
      for (const auto& named : shards[i]) {
        weight_map[named.first] = written.back();
      }
    }
    const nlohmann::json index{{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    written.push_back(base + ".safetensors.index.json");
    write_file_atomic((fs::path(dir) / written.back()).string(), index.dump(2) + "\n");
  }
  // Remove what an earlier save of another size left behind.
  const std::regex ours("^" + base + R"((-\d{5}-of-\d{5})?\.safetensors(\.index\.json)?$)");
  for (const auto& file : fs::directory_iterator(dir)) {
    const std::string name = file.path().filename().string();
    if (std::regex_match(name, ours) &&
        std::find(written.begin(), written.end(), name) == written.end()) {
      fs::remove(file.path());
    }
  }
  return written;
}

}  // namespace vilau::io
