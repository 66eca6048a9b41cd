#include "vilau/io/training_checkpoint.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <regex>
#include <sstream>

#include "vilau/core/error.h"
#include "vilau/core/file.h"
#include "vilau/io/atomic_file.h"
#include "vilau/io/tensor_store.h"

namespace fs = std::filesystem;

namespace vilau::io {

namespace {

constexpr const char* kFormat = "vilau-training-checkpoint";
constexpr int kVersion = 1;
constexpr const char* kStateFile = "trainer_state.json";
constexpr const char* kOptimizerFile = "optimizer.safetensors";
constexpr const char* kRngFile = "rng.safetensors";
constexpr const char* kConfigFile = "config.yaml";
constexpr const char* kLatestFile = "latest";
// Names of the temporaries a crashed save can leave in the root: our folders and the
// temporary of write_file_atomic(root/latest).
constexpr const char* kTmpPrefix = ".tmp-";
constexpr const char* kLatestTmpPrefix = "latest.tmp.";

const std::regex& step_folder_pattern() {
  static const std::regex pattern(R"(step-(\d{1,18}))");
  return pattern;
}

std::string step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld", static_cast<long long>(step));
  return buf;
}

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

void throw_if(const std::error_code& ec, const fs::path& path, const std::string& what) {
  if (ec) {
    throw IoError(describe(path.string(), what, {}, ec.message()));
  }
}

void rename_path(const fs::path& from, const fs::path& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    throw IoError(describe(from.string(), "cannot rename to '" + to.string() + "'", {},
                           std::strerror(errno)));
  }
}

// Removal is cleanup after the fact: a failure leaves a folder the next save retries.
void remove_quietly(const fs::path& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) {
    spdlog::warn("cannot remove '{}': {}", path.string(), ec.message());
  }
}

// Removes the temporary folder of a save on every way out: what it holds then is either a
// half-written checkpoint or the one that was replaced.
class TemporaryFolder {
 public:
  // create: start empty; otherwise adopt the folder prepare() made (IoError if it is gone).
  explicit TemporaryFolder(fs::path path, bool create = true) : path_(std::move(path)) {
    if (!create) {
      if (!fs::is_directory(path_)) {
        throw IoError(describe(path_.string(), "the staging folder of this checkpoint",
                               "made by CheckpointManager::prepare", "missing"));
      }
      return;
    }
    remove_quietly(path_);
    std::error_code ec;
    fs::create_directory(path_, ec);
    throw_if(ec, path_, "cannot create the temporary checkpoint folder");
  }
  ~TemporaryFolder() { remove_quietly(path_); }
  TemporaryFolder(const TemporaryFolder&) = delete;
  TemporaryFolder& operator=(const TemporaryFolder&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// Moves the finished `tmp` to `target`. A replaced `target` may end up in `tmp`.
void move_into_place(const fs::path& tmp, const fs::path& target) {
  if (!fs::exists(target)) {
    rename_path(tmp, target);
    return;
  }
  // An exchange keeps a complete checkpoint at `target` at every instant, so `latest` may
  // name it throughout.
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE) == 0) {
    return;
  }
  if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) {
    throw IoError(describe(target.string(), "cannot replace with '" + tmp.string() + "'", {},
                           std::strerror(errno)));
  }
  // Filesystems without the exchange (NFS): a crash between these renames leaves this step
  // missing until the next save, the replaced copy in a temporary the next save removes.
  const fs::path aside = tmp.string() + ".old";
  rename_path(target, aside);
  rename_path(tmp, target);
  remove_quietly(aside);
}

std::string read_text(const fs::path& path, const std::string& expected) {
  return read_regular_file(path.string(), expected);
}

// The tensors of a file, in the order they were saved.
NamedTensors read_tensors(const fs::path& path, const std::string& expected, bool owned) {
  if (!fs::exists(path)) {
    throw IoError(describe(path.string(), "missing checkpoint file", expected, "no such file"));
  }
  const SafetensorsFile file = SafetensorsFile::open(path.string());
  NamedTensors out;
  for (const TensorInfo& info : file.tensors()) {
    const at::Tensor t = file.tensor(info.name);
    out.emplace_back(info.name, owned ? t.clone() : t);
  }
  return out;
}

NamedTensors read_model(const fs::path& dir) {
  const TensorStore store = TensorStore::open(dir.string());
  // Shard names sort in shard order, and shards were packed in the saved order.
  std::vector<const SafetensorsFile*> files;
  for (const SafetensorsFile& file : store.files()) {
    files.push_back(&file);
  }
  std::sort(files.begin(), files.end(), [](const SafetensorsFile* a, const SafetensorsFile* b) {
    return a->path() < b->path();
  });
  NamedTensors out;
  for (const SafetensorsFile* file : files) {
    for (const TensorInfo& info : file->tensors()) {
      out.emplace_back(info.name, file->tensor(info.name));
    }
  }
  return out;
}

const nlohmann::json& field(const nlohmann::json& state, const fs::path& path, const char* key) {
  if (!state.is_object() || !state.contains(key)) {
    throw FormatError(describe(path.string(), std::string("missing \"") + key + "\"",
                               "a trainer state written by CheckpointManager::save",
                               state.is_object() ? "no such key" : state.type_name()));
  }
  return state.at(key);
}

// The generator a state name stands for.
at::Generator generator_for(const std::string& name) {
  if (name == "cpu") {
    return at::detail::getDefaultCPUGenerator();
  }
  std::smatch match;
  static const std::regex cuda(R"(cuda:(\d{1,4}))");
  if (!std::regex_match(name, match, cuda)) {
    throw FormatError(describe("rng state '" + name + "'", "unknown generator",
                               "\"cpu\" or \"cuda:<index>\"", "'" + name + "'"));
  }
  const int index = std::stoi(match[1].str());
  const int devices = torch::cuda::is_available() ? torch::cuda::device_count() : 0;
  if (index >= devices) {
    throw DeviceError(describe("rng state '" + name + "'", "no such CUDA device",
                               "an index below " + std::to_string(devices), std::to_string(index)));
  }
  return at::globalContext().defaultGenerator(
      c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index)));
}

}  // namespace

NamedTensors capture_rng_states() {
  NamedTensors states;
  const auto capture = [&](at::Generator gen, const std::string& name) {
    std::lock_guard<std::mutex> lock(gen.mutex());
    states.emplace_back(name, gen.get_state());
  };
  capture(at::detail::getDefaultCPUGenerator(), "cpu");
  if (torch::cuda::is_available()) {
    for (int i = 0; i < torch::cuda::device_count(); ++i) {
      const std::string name = "cuda:" + std::to_string(i);
      capture(generator_for(name), name);
    }
  }
  return states;
}

void restore_rng_states(const NamedTensors& states) {
  // Every name is resolved before any state is set, so that a bad one changes nothing.
  std::vector<at::Generator> generators;
  for (const auto& [name, state] : states) {
    generators.push_back(generator_for(name));
    if (state.scalar_type() != at::kByte || state.dim() != 1) {
      throw FormatError(describe("rng state '" + name + "'", "not a generator state",
                                 "a 1-D uint8 tensor",
                                 std::string(c10::toString(state.scalar_type())) + ", " +
                                     std::to_string(state.dim()) + "-D"));
    }
  }
  for (size_t i = 0; i < states.size(); ++i) {
    std::lock_guard<std::mutex> lock(generators[i].mutex());
    try {
      generators[i].set_state(states[i].second.to(at::kCPU).contiguous());
    } catch (const c10::Error& e) {
      throw FormatError(describe("rng state '" + states[i].first + "'", "cannot restore", {},
                                 e.what_without_backtrace()));
    }
  }
}

CheckpointManager::CheckpointManager(std::string root, int64_t keep_last, uint64_t max_shard_bytes)
    : root_(std::move(root)), keep_last_(keep_last), max_shard_bytes_(max_shard_bytes) {}

std::string CheckpointManager::staging_folder(int64_t step) const {
  return (fs::path(root_) / (kTmpPrefix + step_name(step) + "-staging")).string();
}

std::string CheckpointManager::prepare(int64_t step) {
  if (step < 0) {
    throw Error(
        describe(root_, "cannot save training checkpoint", "a step >= 0", std::to_string(step)));
  }
  const fs::path root(root_);
  std::error_code ec;
  fs::create_directories(root, ec);
  throw_if(ec, root, "cannot create the checkpoint folder");
  remove_temporaries();
  const fs::path staging = staging_folder(step);
  fs::create_directory(staging, ec);
  throw_if(ec, staging, "cannot create the temporary checkpoint folder");
  return staging.string();
}

std::string CheckpointManager::save(const TrainingState& state) {
  prepare(state.step);
  return commit(state);
}

std::string CheckpointManager::commit(const TrainingState& state) {
  std::string trainer_state;
  try {
    trainer_state =
        nlohmann::json{{"format", kFormat},  {"version", kVersion},
                       {"step", state.step}, {"scheduler", state.scheduler},
                       {"data", state.data}, {"optimizer_file", !state.optimizer.empty()}}
            .dump(2) +
        "\n";
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(describe(root_, "cannot write the trainer state", {}, e.what()));
  }

  const fs::path root(root_);
  const std::string name = step_name(state.step);
  const TemporaryFolder tmp(staging_folder(state.step), /*create=*/false);
  save_sharded(tmp.path().string(), state.model, max_shard_bytes_, "model");
  if (!state.optimizer.empty()) {
    save_safetensors((tmp.path() / kOptimizerFile).string(), state.optimizer);
  }
  save_safetensors((tmp.path() / kRngFile).string(), state.rng);
  write_file_atomic((tmp.path() / kStateFile).string(), trainer_state);
  write_file_atomic((tmp.path() / kConfigFile).string(), state.config_yaml);

  const fs::path target = root / name;
  move_into_place(tmp.path(), target);
  sync_directory(root_);
  write_file_atomic((root / kLatestFile).string(), name + "\n");
  apply_retention(name);
  return target.string();
}

std::optional<std::string> CheckpointManager::latest() const {
  const fs::path file = fs::path(root_) / kLatestFile;
  if (!fs::exists(file)) {
    return std::nullopt;
  }
  std::string name = read_text(file, "the name of the latest checkpoint");
  name.erase(name.find_last_not_of(" \t\r\n") + 1);
  if (!std::regex_match(name, step_folder_pattern())) {
    throw FormatError(describe(file.string(), "invalid checkpoint name",
                               "a name like step-00000100", "'" + name + "'"));
  }
  const fs::path folder = fs::path(root_) / name;
  if (!fs::is_directory(folder)) {
    throw IoError(describe(file.string(), "names a missing checkpoint",
                           "the folder " + folder.string(), "no such folder"));
  }
  return folder.string();
}

TrainingState CheckpointManager::load(const std::string& folder) const {
  const fs::path dir(folder);
  if (!fs::is_directory(dir)) {
    throw IoError(describe(folder, "cannot load training checkpoint", "a checkpoint folder",
                           "no such folder"));
  }
  const fs::path state_path = dir / kStateFile;
  nlohmann::json meta;
  try {
    meta = nlohmann::json::parse(read_text(state_path, "the trainer state written by save"));
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(describe(state_path.string(), "invalid JSON", {}, e.what()));
  }
  const nlohmann::json& format = field(meta, state_path, "format");
  if (format != kFormat) {
    throw FormatError(describe(state_path.string(), "not a training checkpoint",
                               std::string("\"format\": \"") + kFormat + "\"",
                               "\"format\": " + format.dump()));
  }
  const nlohmann::json& version = field(meta, state_path, "version");
  if (version != kVersion) {
    throw FormatError(describe(state_path.string(), "unsupported \"version\"",
                               std::to_string(kVersion), version.dump()));
  }
  const nlohmann::json& step = field(meta, state_path, "step");
  if (!step.is_number_integer()) {
    throw FormatError(describe(state_path.string(), "\"step\"", "an integer", step.dump()));
  }

  TrainingState state;
  state.step = step.get<int64_t>();
  state.scheduler = field(meta, state_path, "scheduler");
  state.data = field(meta, state_path, "data");
  state.model = read_model(dir);
  // Checkpoints whose optimizer writes its own shards have no optimizer file.
  const bool optimizer_file =
      !meta.contains("optimizer_file") || meta.at("optimizer_file") != false;
  if (optimizer_file) {
    state.optimizer = read_tensors(dir / kOptimizerFile, "the optimizer state", /*owned=*/true);
  }
  state.rng = read_tensors(dir / kRngFile, "the generator states", /*owned=*/true);
  state.config_yaml = read_text(dir / kConfigFile, "the run config");
  return state;
}

std::optional<TrainingState> CheckpointManager::load_latest() const {
  const std::optional<std::string> folder = latest();
  if (!folder) {
    return std::nullopt;
  }
  return load(*folder);
}

void CheckpointManager::remove_temporaries() const {
  for (const auto& entry : fs::directory_iterator(root_)) {
    const std::string name = entry.path().filename().string();
    if (starts_with(name, kTmpPrefix) || starts_with(name, kLatestTmpPrefix)) {
      remove_quietly(entry.path());
    }
  }
}

void CheckpointManager::apply_retention(const std::string& keep) const {
  if (keep_last_ <= 0) {
    return;
  }
  std::vector<std::pair<int64_t, std::string>> others;
  for (const auto& entry : fs::directory_iterator(root_)) {
    const std::string name = entry.path().filename().string();
    std::smatch match;
    if (entry.is_directory() && name != keep &&
        std::regex_match(name, match, step_folder_pattern())) {
      others.emplace_back(std::stoll(match[1].str()), name);
    }
  }
  std::sort(others.begin(), others.end(), std::greater<>());
  const fs::path root(root_);
  for (size_t i = static_cast<size_t>(keep_last_ - 1); i < others.size(); ++i) {
    // Renamed first so that a crash midway leaves no half-deleted checkpoint behind.
    const fs::path doomed =
        root / (kTmpPrefix + others[i].second + "-" + std::to_string(::getpid()));
    std::error_code ec;
    fs::rename(root / others[i].second, doomed, ec);
    if (ec) {
      spdlog::warn("cannot remove old checkpoint '{}': {}", (root / others[i].second).string(),
                   ec.message());
      continue;
    }
    remove_quietly(doomed);
  }
}

}  // namespace vilau::io
