#include "run.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <regex>

#include "vilau/core/error.h"
#include "vilau/infer/runtime.h"
#include "vilau/io/atomic_file.h"
#include "vilau/model/official_checkpoint.h"

namespace vilau {

namespace train_detail {

namespace fs = std::filesystem;

Run::Run(const Config& c, const std::string& yaml, const ProcessGroup& g)
    : config(c), train(*c.train), group(g), config_yaml(yaml) {
  device = training_device(train, group.env().local_rank);
  dtype = parse_dtype(train.precision, device);
  // Whatever the model's origin, the same config and seed draw the same dropout masks.
  torch::manual_seed(static_cast<uint64_t>(train.seed));
  if (device.is_cuda()) {
    torch::cuda::manual_seed_all(static_cast<uint64_t>(train.seed));
  }
  fs::create_directories(train.output_dir);
  checkpoints_ = std::make_unique<io::CheckpointManager>(
      (fs::path(train.output_dir) / "checkpoints").string(), train.keep_last);
  if (is_main()) {
    io::write_file_atomic((fs::path(train.output_dir) / "config.yaml").string(), config_yaml);
    metrics_ =
        std::make_unique<MetricsWriter>((fs::path(train.output_dir) / "metrics.jsonl").string());
  }
}

std::string Run::tokenizer_dir() const {
  if (!train.tokenizer.empty()) return train.tokenizer;
  if (!train.init.empty()) return (fs::path(train.init) / "llm").string();
  throw ConfigError(describe("train.tokenizer", "a tokenizer folder",
                             "train.tokenizer or train.init (whose llm/ has one)", "neither"));
}

std::optional<io::TrainingState> Run::resume(std::string* folder) const {
  const fs::path root = fs::path(train.output_dir) / "checkpoints";
  if (!fs::exists(root)) return std::nullopt;
  std::vector<std::string> candidates;
  try {
    if (auto latest = checkpoints_->latest()) candidates.push_back(*latest);
  } catch (const Error& e) {
    spdlog::warn("{}", e.what());
  }
  std::vector<std::string> older;
  static const std::regex name(R"(step-\d+)");
  for (const auto& entry : fs::directory_iterator(root)) {
    if (entry.is_directory() && std::regex_match(entry.path().filename().string(), name)) {
      older.push_back(entry.path().string());
    }
  }
  std::sort(older.rbegin(), older.rend());
  for (const auto& o : older) {
    if (std::find(candidates.begin(), candidates.end(), o) == candidates.end()) {
      candidates.push_back(o);
    }
  }
  for (size_t i = 0; i < candidates.size(); ++i) {
    try {
      io::TrainingState state = checkpoints_->load(candidates[i]);
      if (i > 0) {
        spdlog::warn("resuming from the older checkpoint {}", candidates[i]);
      }
      *folder = candidates[i];
      return state;
    } catch (const Error& e) {
      spdlog::warn("checkpoint {} cannot be loaded, trying an older one: {}", candidates[i],
                   e.what());
    }
  }
  return std::nullopt;
}

void Run::save(io::TrainingState state, const data::DataPosition& position,
               const std::function<void(const std::string& folder)>& write_shards) {
  // Every rank's data position and RNG state, so that each resumes where it was.
  at::Tensor mine = at::tensor({position.epoch, position.index}, at::kLong);
  at::Tensor positions = at::empty({2 * group.world_size()}, at::kLong);
  group.all_gather(positions, mine);
  nlohmann::json list = nlohmann::json::array();
  for (int64_t r = 0; r < group.world_size(); ++r) {
    list.push_back(
        data::DataPosition{positions[2 * r].item<int64_t>(), positions[2 * r + 1].item<int64_t>()}
            .to_json());
  }
  state.data = {{"positions", list}};
  for (auto& [name, rng] : io::capture_rng_states()) {
    at::Tensor all = at::empty({rng.numel() * group.world_size()}, rng.options());
    at::Tensor flat = rng.contiguous().view(-1);
    group.all_gather(all, flat);
    for (int64_t r = 0; r < group.world_size(); ++r) {
      state.rng.emplace_back("rank" + std::to_string(r) + "." + name,
                             all.narrow(0, r * rng.numel(), rng.numel()).clone());
    }
  }
  state.config_yaml = config_yaml;
  if (is_main()) checkpoints_->prepare(state.step);
  group.barrier();
  write_shards(checkpoints_->staging_folder(state.step));
  group.barrier();
  if (is_main()) {
    const std::string folder = checkpoints_->commit(state);
    spdlog::info("saved checkpoint {}", folder);
  }
  group.barrier();
}

data::DataPosition Run::position_of(const io::TrainingState& state) const {
  const auto& list = state.data.at("positions");
  const int64_t saved = static_cast<int64_t>(list.size());
  if (saved == group.world_size()) {
    return data::DataPosition::from_json(list.at(static_cast<size_t>(group.rank())),
                                         "checkpoint data position");
  }
  // Rank r of W read samples r, r + W, ... of the epoch's order: with equal counts k the
  // run consumed exactly samples [0, k W), which M ranks continue at k W / M each.
  std::vector<data::DataPosition> positions;
  for (const auto& p : list) {
    positions.push_back(data::DataPosition::from_json(p, "checkpoint data position"));
  }
  for (const auto& p : positions) {
    if (!(p == positions.front())) {
      throw ConfigError(describe(
          "resume on " + std::to_string(group.world_size()) + " ranks", "checkpoint data positions",
          "the same on every one of the " + std::to_string(saved) + " saved ranks",
          "epoch " + std::to_string(p.epoch) + " index " + std::to_string(p.index) +
              " against epoch " + std::to_string(positions.front().epoch) + " index " +
              std::to_string(positions.front().index)));
    }
  }
  const int64_t consumed = positions.front().index * saved;
  if (consumed % group.world_size() != 0) {
    throw ConfigError(describe("resume on " + std::to_string(group.world_size()) + " ranks",
                               "samples consumed in the epoch", "a multiple of the world size",
                               std::to_string(consumed)));
  }
  spdlog::info("resuming a checkpoint of {} ranks on {}: {} samples of epoch {} consumed", saved,
               group.world_size(), consumed, positions.front().epoch);
  return {positions.front().epoch, consumed / group.world_size()};
}

void Run::restore_rng(const io::TrainingState& state) const {
  // On another world size, ranks that did not exist keep the generator train.seed gave them.
  io::NamedTensors mine;
  const std::string prefix = "rank" + std::to_string(group.rank()) + ".";
  for (const auto& [name, t] : state.rng) {
    if (name.rfind(prefix, 0) == 0) mine.emplace_back(name.substr(prefix.size()), t);
  }
  io::restore_rng_states(mine);
}

std::string Run::export_model(const ModelConfig& model,
                              const std::map<std::string, at::Tensor>& weights) const {
  const fs::path out = fs::path(train.output_dir) / "export";
  ExportOptions options;
  options.source = train.init;  // tokenizer files and untouched config fields
  export_official(out.string(), model, weights, options);
  if (train.init.empty()) {
    for (const auto& entry : fs::directory_iterator(tokenizer_dir())) {
      fs::copy_file(entry.path(), out / "llm" / entry.path().filename(),
                    fs::copy_options::overwrite_existing);
    }
  }
  spdlog::info("exported {} in the official layout", out.string());
  return out.string();
}

void Run::log(const nlohmann::json& record) {
  if (metrics_) metrics_->write(record);
}

void Run::count_skipped(TrainSummary& summary, int64_t step, double grad_norm) const {
  ++summary.skipped_steps;
  spdlog::warn("step {}: non-finite loss or gradient (norm {}), update skipped ({} so far)", step,
               grad_norm, summary.skipped_steps);
  if (summary.skipped_steps > train.max_skipped_steps) {
    throw Error(
        describe("training", "steps with NaN/Inf loss or gradients",
                 "at most train.max_skipped_steps = " + std::to_string(train.max_skipped_steps),
                 std::to_string(summary.skipped_steps)));
  }
}

data::DataBatch Run::next_batch(data::DataLoader& loader) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (auto batch = loader.next()) return std::move(*batch);
  }
  throw ConfigError(describe("data", "samples for this rank", "at least one per epoch", "none"));
}

MultimodalBatch Run::to_device(const MultimodalBatch& b) const {
  MultimodalBatch out;
  const auto move = [this](const at::Tensor& t) { return t.defined() ? t.to(device) : t; };
  out.input_ids = move(b.input_ids);
  out.attention_mask = move(b.attention_mask);
  out.labels = move(b.labels);
  out.images = b.images.defined() ? b.images.to(device, dtype) : b.images;
  out.image_codes = move(b.image_codes);
  out.segment_ids = move(b.segment_ids);
  return out;
}

TensorMap as_map(const io::NamedTensors& tensors) {
  return TensorMap(tensors.begin(), tensors.end());
}

io::NamedTensors as_named(const TensorMap& tensors) {
  return io::NamedTensors(tensors.begin(), tensors.end());
}

double mean_over_ranks(const ProcessGroup& group, double value) {
  at::Tensor t = at::scalar_tensor(value, at::kDouble).view({1});
  group.all_reduce_mean(t);
  return t.item<double>();
}

}  // namespace train_detail

at::Device training_device(const TrainConfig& train, int64_t local_rank) {
  if (train.device != "auto") return parse_device(train.device);
  return torch::cuda::is_available()
             ? at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(local_rank))
             : at::Device(at::kCPU);
}

std::vector<std::pair<std::string, at::Tensor>> select_trainable(
    VilaUImpl& model, const std::vector<std::string>& modules) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& child : model.named_children()) {
    const bool trains = std::find(modules.begin(), modules.end(), child.key()) != modules.end();
    for (const auto& p : child.value()->named_parameters()) {
      at::Tensor param = p.value();
      param.requires_grad_(trains);
      if (trains) out.emplace_back(child.key() + "." + p.key(), param);
    }
  }
  return out;
}

TrainSummary train(const Config& config, const std::string& config_yaml, const ProcessGroup& group,
                   const TrainOptions& options) {
  if (!config.train) {
    throw ConfigError(describe("run config", "section 'train'", "present", "missing"));
  }
  if (!config.data) {
    throw ConfigError(describe("run config", "section 'data'", "present", "missing"));
  }
  train_detail::Run run(config, config_yaml, group);
  return config.train->stage == "tower" ? train_detail::train_tower(run, options)
                                        : train_detail::train_multimodal(run, options);
}

}  // namespace vilau
