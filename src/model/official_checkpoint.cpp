#include "vilau/model/official_checkpoint.h"

#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "official_config.h"
#include "vilau/core/error.h"
#include "vilau/io/atomic_file.h"
#include "vilau/io/json_file.h"

namespace fs = std::filesystem;

namespace vilau {

namespace {

using nlohmann::json;

constexpr const char* kConfigWhat = "an official VILA-U config file";

// Files that travel unchanged from a source checkpoint: tokenizer, generation config...
bool is_passthrough(const fs::path& file) {
  const std::string name = file.filename().string();
  return name != "config.json" && file.extension() != ".safetensors" &&
         name.find(".safetensors.index.json") == std::string::npos && fs::is_regular_file(file);
}

}  // namespace

std::string TensorCheck::summary(size_t max_names) const {
  if (ok()) {
    return "all expected tensors present with the expected shapes";
  }
  std::string out;
  auto list = [&](const char* what, const std::vector<std::string>& names) {
    if (names.empty()) {
      return;
    }
    out += (out.empty() ? "" : "; ") + std::to_string(names.size()) + " " + what + ": ";
    for (size_t i = 0; i < names.size() && i < max_names; ++i) {
      out += (i ? ", " : "") + names[i];
    }
    if (names.size() > max_names) {
      out += ", ...";
    }
  };
  list("missing", missing);
  list("unexpected", unexpected);
  list("with another shape", mismatched);
  return out;
}

OfficialCheckpoint OfficialCheckpoint::open(const std::string& root) {
  OfficialCheckpoint ckpt;
  ckpt.root_ = fs::path(root).lexically_normal().string();
  if (!ckpt.root_.empty() && ckpt.root_.back() == '/') {
    ckpt.root_.pop_back();
  }
  const fs::path dir(ckpt.root_);
  if (!fs::is_directory(dir)) {
    throw IoError(
        describe(root, "not a folder", "an official VILA-U checkpoint folder", "no such folder"));
  }
  ckpt.raw_["config"] = io::read_json_file((dir / "config.json").string(), kConfigWhat);
  for (Component c : kComponents) {
    const std::string folder = component_folder(c);
    ckpt.raw_[folder] = io::read_json_file((dir / folder / "config.json").string(), kConfigWhat);
    ckpt.stores_[c] =
        std::make_shared<io::TensorStore>(io::TensorStore::open((dir / folder).string()));
  }
  if (fs::exists(dir / "vision_tower" / "preprocessor_config.json")) {
    ckpt.raw_["preprocessor"] = io::read_json_file(
        (dir / "vision_tower" / "preprocessor_config.json").string(), kConfigWhat);
  }
  const io::TensorStore& tower = *ckpt.stores_.at(Component::vision_tower);
  const ShapeLookup shape =
      [&tower](const std::string& name) -> std::optional<std::vector<int64_t>> {
    if (!tower.contains(name)) {
      return std::nullopt;
    }
    return tower.info(name).shape;
  };
  ckpt.config_ = parse_official_configs(ckpt.raw_, shape, ckpt.root_);
  return ckpt;
}

std::vector<std::string> OfficialCheckpoint::names() const {
  std::vector<std::string> out;
  for (const auto& [component, store] : stores_) {
    for (const std::string& name : store->names()) {
      out.push_back(to_vilau_name(component, name));
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

const io::TensorStore& OfficialCheckpoint::store(Component component) const {
  return *stores_.at(component);
}

const io::TensorInfo& OfficialCheckpoint::info(const std::string& name) const {
  const auto [component, official] = to_official_name(name);
  const io::TensorStore& s = store(component);
  // The official code may have saved the logit scalars under their alias.
  if (!s.contains(official) && official.rfind("rqvaesiglip.siglip_model.logit_", 0) == 0) {
    return s.info("rqvaesiglip." +
                  official.substr(std::string("rqvaesiglip.siglip_model.").size()));
  }
  return s.info(official);
}

at::Tensor OfficialCheckpoint::tensor(const std::string& name) const {
  const io::TensorInfo& i = info(name);
  const auto [component, official] = to_official_name(name);
  return store(component).tensor(i.name);
}

std::map<std::string, at::Tensor> OfficialCheckpoint::load_all() const {
  std::map<std::string, at::Tensor> out;
  for (const auto& [component, store] : stores_) {
    for (auto& [name, tensor] : store->load_all()) {
      out.emplace(to_vilau_name(component, name), std::move(tensor));
    }
  }
  return out;
}

TensorCheck OfficialCheckpoint::check() const {
  TensorCheck result;
  std::set<std::string> present;
  for (const std::string& name : names()) {
    present.insert(name);
  }
  std::set<std::string> expected_names;
  for (const ExpectedTensor& e : expected_tensors(config_)) {
    expected_names.insert(e.name);
    if (present.count(e.name) == 0) {
      result.missing.push_back(e.name);
      continue;
    }
    const io::TensorInfo& found = info(e.name);
    if (found.shape != e.shape) {
      result.mismatched.push_back(e.name + ": expected " + io::shape_text(e.shape) + ", found " +
                                  io::shape_text(found.shape));
    }
  }
  for (const std::string& name : present) {
    if (expected_names.count(name) == 0) {
      result.unexpected.push_back(name);
    }
  }
  return result;
}

void export_official(const std::string& root, const ModelConfig& config,
                     const std::map<std::string, at::Tensor>& weights,
                     const ExportOptions& options) {
  // Validate everything before writing anything.
  TensorCheck check;
  std::map<Component, io::NamedTensors> parts;
  std::set<std::string> expected_names;
  for (const ExpectedTensor& e : expected_tensors(config)) {
    expected_names.insert(e.name);
    const auto it = weights.find(e.name);
    if (it == weights.end()) {
      check.missing.push_back(e.name);
    } else if (it->second.sizes().vec() != e.shape) {
      check.mismatched.push_back(e.name + ": expected " + io::shape_text(e.shape) + ", found " +
                                 io::shape_text(it->second.sizes().vec()));
    } else {
      auto [component, official] = to_official_name(e.name);
      parts[component].emplace_back(official, it->second);
    }
  }
  for (const auto& [name, tensor] : weights) {
    if (expected_names.count(name) == 0) {
      check.unexpected.push_back(name);
    }
  }
  if (!check.ok()) {
    throw ShapeError(describe(root,
                              "cannot export weights that do not fit model '" + config.name + "'",
                              {}, check.summary()));
  }

  std::map<std::string, json> source;
  if (!options.source.empty()) {
    const OfficialCheckpoint original = OfficialCheckpoint::open(options.source);
    for (const char* which : {"config", "llm", "vision_tower", "mm_projector"}) {
      source[which] = original.raw(which);
    }
  }
  const auto configs = make_official_configs(config, source);
  const fs::path dir(root);
  fs::create_directories(dir);
  for (Component c : kComponents) {
    const fs::path sub = dir / component_folder(c);
    fs::create_directories(sub);
    io::save_sharded(sub.string(), parts[c], options.max_shard_bytes);
    io::write_file_atomic((sub / "config.json").string(),
                          configs.at(component_folder(c)).dump(2) + "\n");
    if (!options.source.empty()) {
      for (const auto& file :
           fs::directory_iterator(fs::path(options.source) / component_folder(c))) {
        if (is_passthrough(file.path())) {
          fs::copy_file(file.path(), sub / file.path().filename(),
                        fs::copy_options::overwrite_existing);
        }
      }
    }
  }
  // Files the official code needs that a source folder did not provide: the LLM's generation
  // config (its do_sample is what routes generate_image_content to the sampling path that
  // passes the vision tower along) as the released folders carry it, and the tower's image
  // processor.
  const fs::path generation = dir / "llm" / "generation_config.json";
  if (!fs::exists(generation)) {
    const json g = {{"bos_token_id", 1}, {"do_sample", true},
                    {"eos_token_id", 2}, {"max_length", config.llm.max_position_embeddings},
                    {"pad_token_id", 0}, {"temperature", 0.6},
                    {"top_p", 0.9},      {"transformers_version", "4.36.2"}};
    io::write_file_atomic(generation.string(), g.dump(2) + "\n");
  }
  const fs::path preprocessor = dir / "vision_tower" / "preprocessor_config.json";
  if (!fs::exists(preprocessor)) {
    const int64_t size = config.vision_tower.vision.image_size;
    const json square = {{"height", size}, {"width", size}};
    const json p = {{"crop_size", square},
                    {"do_center_crop", true},
                    {"do_convert_rgb", true},
                    {"do_normalize", true},
                    {"do_rescale", true},
                    {"do_resize", true},
                    {"image_mean", {0.5, 0.5, 0.5}},
                    {"image_processor_type", "CLIPImageProcessor"},
                    {"image_std", {0.5, 0.5, 0.5}},
                    {"resample", 3},
                    {"rescale_factor", 1.0 / 255.0},
                    {"size", square}};
    io::write_file_atomic(preprocessor.string(), p.dump(2) + "\n");
  }
  // The top config last: a folder without it is visibly incomplete.
  io::write_file_atomic((dir / "config.json").string(), configs.at("config").dump(2) + "\n");
}

}  // namespace vilau
