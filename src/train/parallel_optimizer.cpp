#include "vilau/train/parallel_optimizer.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "vilau/core/error.h"
#include "vilau/io/atomic_file.h"
#include "vilau/io/json_file.h"
#include "vilau/io/safetensors.h"

namespace vilau {

namespace {

namespace fs = std::filesystem;

constexpr const char* kShardFormat = "vilau-optimizer-shards";
constexpr int kShardVersion = 1;
const std::vector<std::string> kStates = {"master", "exp_avg", "exp_avg_sq"};

std::string module_of(const std::string& name) { return name.substr(0, name.find('.')); }

at::ScalarType reduce_dtype(const std::string& name) {
  return name == "bf16" ? at::kBFloat16 : at::kFloat;
}

std::string shard_file(const std::string& name, int64_t rank, int64_t shards) {
  return name + "-rank" + std::to_string(rank) + "-of-" + std::to_string(shards) + ".safetensors";
}

std::string piece_name(const std::string& state, const std::string& param, int64_t start) {
  return state + "/" + param + "@" + std::to_string(start);
}

// A typed field of the shard index, or FormatError naming the file and the key.
const nlohmann::json& index_field(const nlohmann::json& j, const std::string& key,
                                  const std::string& file, bool (nlohmann::json::*is)() const,
                                  const char* expected) {
  if (!j.is_object() || !j.contains(key) || !(j.at(key).*is)()) {
    throw FormatError(describe(file, "key \"" + key + "\"", expected,
                               j.is_object() && j.contains(key) ? j.at(key).dump() : "missing"));
  }
  return j.at(key);
}

int64_t index_int(const nlohmann::json& j, const std::string& key, const std::string& file,
                  int64_t min) {
  const int64_t v =
      index_field(j, key, file, &nlohmann::json::is_number_integer, "an integer").get<int64_t>();
  if (v < min) {
    throw FormatError(
        describe(file, "key \"" + key + "\"", ">= " + std::to_string(min), std::to_string(v)));
  }
  return v;
}

FlatLayout make_layout(std::vector<std::pair<std::string, at::Tensor>> params,
                       const DistributedConfig& distributed, int64_t world) {
  std::reverse(params.begin(), params.end());  // backward order
  if (distributed.zero_stage == 3) return FlatLayout(std::move(params), fsdp_unit, world);
  return FlatLayout(std::move(params), static_cast<int64_t>(distributed.bucket_mb * (1 << 20) / 4),
                    distributed.zero_stage >= 1 ? world : 1);
}

}  // namespace

std::string fsdp_unit(const std::string& name) {
  for (const std::string prefix :
       {"llm.model.layers.", "depth_transformer.head_transformer.blocks."}) {
    if (name.rfind(prefix, 0) == 0) {
      return name.substr(0, name.find('.', prefix.size()));
    }
  }
  if (name.rfind("mm_projector.", 0) == 0) return "mm_projector";
  return "root";
}

ParallelOptimizer::ParallelOptimizer(std::vector<std::pair<std::string, at::Tensor>> params,
                                     const OptimizerConfig& optimizer,
                                     const DistributedConfig& distributed,
                                     const ProcessGroup& group, at::Device device)
    : group_(group),
      config_(optimizer),
      zero_stage_(distributed.zero_stage),
      layout_(make_layout(std::move(params), distributed, group.world_size())) {
  if (layout_.params.empty()) {
    throw ConfigError(describe("train.trainable", "parameters to train", "at least one", "none"));
  }
  if (zero_stage_ < 0 || zero_stage_ > 3) {
    throw ConfigError(describe("train.distributed.zero_stage", "value", "0, 1, 2 or 3",
                               std::to_string(zero_stage_)));
  }
  std::vector<ParamGroup> groups;
  std::vector<size_t> group_of;
  for (const FlatLayout::Param& p : layout_.params) {
    const std::string module = module_of(p.name);
    const bool decay = p.tensor.dim() >= 2;
    const std::string name = module + (decay ? "" : ".no_decay");
    auto it = std::find_if(groups.begin(), groups.end(),
                           [&name](const ParamGroup& g) { return g.name == name; });
    if (it == groups.end()) {
      groups.push_back({name, config_.lr_of(module), decay ? config_.weight_decay : 0.0});
      it = groups.end() - 1;
    }
    group_of.push_back(static_cast<size_t>(it - groups.begin()));
  }
  const int64_t rank = layout_.shards > 1 ? group_.rank() : 0;
  std::vector<ShardSegment> segments;
  for (const FlatLayout::Piece& piece : layout_.pieces(rank)) {
    const size_t g = group_of[piece.param];
    if (!segments.empty() && segments.back().group == g &&
        segments.back().begin + segments.back().length == piece.shard_offset) {
      segments.back().length += piece.length;
    } else {
      segments.push_back({g, piece.shard_offset, piece.length});
    }
  }
  optimizer_ = std::make_unique<ShardedAdamW>(std::move(groups), std::move(segments), config_,
                                              layout_.shard_values(rank).to(device));
  GradientSync::Options options;
  options.shard_gradients = zero_stage_ >= 2;
  options.reduce_dtype = reduce_dtype(distributed.reduce_dtype);
  options.device = device;
  if (zero_stage_ == 3) {
    options.on_launch = [this](int64_t bucket) { units_->on_reduced(bucket); };
  }
  sync_ = std::make_unique<GradientSync>(layout_, group_, options);
  if (zero_stage_ == 3) {
    units_ = std::make_unique<FullyShardedUnits>(layout_, group_, optimizer_->master(), *sync_);
  }
}

int64_t ParallelOptimizer::bucket_of_unit(const std::string& unit) const {
  for (const FlatLayout::Param& p : layout_.params) {
    if (fsdp_unit(p.name) == unit) return p.bucket;
  }
  return -1;
}

void ParallelOptimizer::for_each_sharded_parameter(
    const std::function<void(const std::string& name, const at::Tensor& value)>& fn) {
  if (!units_) return;
  for (int64_t b = 0; b < units_->root(); ++b) {
    units_->gather(b);
    const FlatLayout::Bucket& bucket = layout_.buckets[b];
    for (int64_t i = bucket.first_param; i < bucket.end_param; ++i) {
      fn(layout_.params[i].name, layout_.params[i].tensor);
    }
    units_->release(b);
  }
}

void ParallelOptimizer::backward(const at::Tensor& loss, bool last) {
  sync_->begin_backward(last);
  loss.backward();
  sync_->end_backward();
}

int64_t ParallelOptimizer::parameter_bytes() const {
  int64_t bytes = 0;
  for (const FlatLayout::Param& p : layout_.params) {
    bytes += p.tensor.numel() * p.tensor.element_size();
  }
  return bytes;
}

void ParallelOptimizer::write_back() {
  torch::NoGradGuard no_grad;
  const at::Tensor& master = optimizer_->master();
  for (size_t b = 0; b < layout_.buckets.size(); ++b) {
    // ZeRO-3 units gather from the master shard when they next run.
    if (units_ && static_cast<int64_t>(b) < units_->root()) continue;
    const FlatLayout::Bucket& bucket = layout_.buckets[b];
    if (layout_.shards == 1) {
      layout_.write_bucket(static_cast<int64_t>(b),
                           master.narrow(0, bucket.shard_offset, bucket.padded));
      continue;
    }
    const at::ScalarType dtype = layout_.gather_dtype(static_cast<int64_t>(b));
    const int64_t chunk = bucket.chunk(layout_.shards);
    at::Tensor mine = master.narrow(0, bucket.shard_offset, chunk).to(dtype).contiguous();
    at::Tensor full = at::empty({bucket.padded}, mine.options());
    group_.all_gather(full, mine);
    layout_.write_bucket(static_cast<int64_t>(b), full);
  }
}

ParallelOptimizer::Step ParallelOptimizer::step(double lr_factor, bool loss_finite) {
  torch::NoGradGuard no_grad;
  const at::Tensor& synced = sync_->finish();
  // ZeRO-1 all-reduced everything; its optimizer needs only this rank's shard.
  at::Tensor grads = zero_stage_ == 1 ? layout_.shard_of(synced, group_.rank()) : synced;
  // Squared norm of this rank's part, and a flag for a non-finite loss on any rank.
  at::Tensor stats = at::stack(
      {grads.square().sum(), at::scalar_tensor(loss_finite ? 0.0 : 1.0, grads.options())});
  if (zero_stage_ > 0) {
    group_.all_reduce_sum(stats);
  } else {
    at::Tensor flag = stats.narrow(0, 1, 1);
    group_.all_reduce_sum(flag);
  }
  const auto values = stats.cpu();
  Step out;
  out.grad_norm = std::sqrt(values[0].item<double>());
  if (!std::isfinite(out.grad_norm) || values[1].item<double>() > 0) {
    out.skipped = true;
    return out;
  }
  if (config_.grad_clip > 0 && out.grad_norm > config_.grad_clip) {
    grads.mul_(config_.grad_clip / (out.grad_norm + 1e-6));
  }
  optimizer_->step(grads, lr_factor);
  write_back();
  return out;
}

void ParallelOptimizer::save_shard(const std::string& folder, const std::string& name) const {
  const int64_t shards = layout_.shards;
  const int64_t rank = shards > 1 ? group_.rank() : 0;
  if (shards > 1 || group_.rank() == 0) {
    io::NamedTensors tensors;
    for (const FlatLayout::Piece& piece : layout_.pieces(rank)) {
      const std::string& param = layout_.params[piece.param].name;
      tensors.emplace_back(piece_name("master", param, piece.start),
                           optimizer_->master().narrow(0, piece.shard_offset, piece.length));
      tensors.emplace_back(piece_name("exp_avg", param, piece.start),
                           optimizer_->exp_avg().narrow(0, piece.shard_offset, piece.length));
      tensors.emplace_back(piece_name("exp_avg_sq", param, piece.start),
                           optimizer_->exp_avg_sq().narrow(0, piece.shard_offset, piece.length));
    }
    io::save_safetensors((fs::path(folder) / shard_file(name, rank, shards)).string(), tensors);
  }
  if (group_.rank() != 0) return;
  nlohmann::json parameters = nlohmann::json::array(), pieces = nlohmann::json::array();
  for (const FlatLayout::Param& p : layout_.params) {
    parameters.push_back({{"name", p.name}, {"numel", p.numel}});
  }
  for (int64_t r = 0; r < shards; ++r) {
    for (const FlatLayout::Piece& piece : layout_.pieces(r)) {
      pieces.push_back({{"rank", r},
                        {"parameter", layout_.params[piece.param].name},
                        {"start", piece.start},
                        {"length", piece.length}});
    }
  }
  const nlohmann::json index = {
      {"format", kShardFormat},    {"version", kShardVersion},     {"shards", shards},
      {"zero_stage", zero_stage_}, {"steps", optimizer_->steps()}, {"parameters", parameters},
      {"pieces", pieces}};
  io::write_file_atomic((fs::path(folder) / (name + ".index.json")).string(), index.dump(1) + "\n");
}

void ParallelOptimizer::load_shard(const std::string& folder, const std::string& name) {
  const std::string file = (fs::path(folder) / (name + ".index.json")).string();
  const nlohmann::json index = io::read_json_file(file, "the optimizer shard index");
  if (!index.is_object() || index.value("format", "") != kShardFormat) {
    throw FormatError(describe(
        file, "key \"format\"", std::string("\"") + kShardFormat + "\"",
        index.is_object() && index.contains("format") ? index.at("format").dump() : "missing"));
  }
  const int64_t version = index_int(index, "version", file, 0);
  if (version != kShardVersion) {
    throw FormatError(
        describe(file, "key \"version\"", std::to_string(kShardVersion), std::to_string(version)));
  }
  const int64_t shards = index_int(index, "shards", file, 1);
  const int64_t steps = index_int(index, "steps", file, 0);
  // The checkpoint must describe exactly these parameters.
  std::map<std::string, int64_t> numel;
  for (const auto& p :
       index_field(index, "parameters", file, &nlohmann::json::is_array, "an array")) {
    numel[index_field(p, "name", file, &nlohmann::json::is_string, "a string").get<std::string>()] =
        index_int(p, "numel", file, 0);
  }
  for (const FlatLayout::Param& p : layout_.params) {
    const auto it = numel.find(p.name);
    if (it == numel.end() || it->second != p.numel) {
      throw FormatError(describe(file, "parameter " + p.name,
                                 std::to_string(p.numel) + " elements, as the model has",
                                 it == numel.end() ? "missing" : std::to_string(it->second)));
    }
  }
  if (numel.size() != layout_.params.size()) {
    throw FormatError(
        describe(file, "parameters",
                 std::to_string(layout_.params.size()) + " trainable ones, as this run has",
                 std::to_string(numel.size())));
  }
  struct Old {
    int64_t rank, start, length;
  };
  std::map<std::string, std::vector<Old>> old;
  for (const auto& piece :
       index_field(index, "pieces", file, &nlohmann::json::is_array, "an array")) {
    const std::string param =
        index_field(piece, "parameter", file, &nlohmann::json::is_string, "a string");
    const Old o{index_int(piece, "rank", file, 0), index_int(piece, "start", file, 0),
                index_int(piece, "length", file, 1)};
    if (o.rank >= shards || !numel.count(param) || o.start + o.length > numel.at(param)) {
      throw FormatError(
          describe(file, "piece of " + param,
                   "a rank below " + std::to_string(shards) + " and elements inside the parameter",
                   "rank " + std::to_string(o.rank) + ", elements " + std::to_string(o.start) +
                       "+" + std::to_string(o.length)));
    }
    old[param].push_back(o);
  }
  // Files are mapped, not read: a rank touches only the pages of its own pieces.
  std::map<int64_t, io::SafetensorsFile> files;
  const auto file_of = [&](int64_t r) -> const io::SafetensorsFile& {
    auto it = files.find(r);
    if (it == files.end()) {
      it = files
               .emplace(r, io::SafetensorsFile::open(
                               (fs::path(folder) / shard_file(name, r, shards)).string()))
               .first;
    }
    return it->second;
  };
  torch::NoGradGuard no_grad;
  const int64_t rank = layout_.shards > 1 ? group_.rank() : 0;
  for (const FlatLayout::Piece& piece : layout_.pieces(rank)) {
    const std::string& param = layout_.params[piece.param].name;
    int64_t covered = 0;
    for (const Old& o : old[param]) {
      const int64_t begin = std::max(o.start, piece.start);
      const int64_t end = std::min(o.start + o.length, piece.start + piece.length);
      if (begin >= end) continue;
      const io::SafetensorsFile& source = file_of(o.rank);
      for (const std::string& state : kStates) {
        const std::string tensor = piece_name(state, param, o.start);
        const at::Tensor values = source.tensor(tensor);
        if (values.numel() != o.length || values.scalar_type() != at::kFloat) {
          throw FormatError(
              describe(source.path(), "tensor " + tensor, std::to_string(o.length) + " fp32 values",
                       std::to_string(values.numel()) + " " + c10::toString(values.scalar_type())));
        }
        optimizer_->mutable_state(state)
            .narrow(0, piece.shard_offset + (begin - piece.start), end - begin)
            .copy_(values.reshape(-1).narrow(0, begin - o.start, end - begin));
      }
      covered += end - begin;
    }
    if (covered != piece.length) {
      throw FormatError(describe(file, "pieces of " + param,
                                 "elements " + std::to_string(piece.start) + "+" +
                                     std::to_string(piece.length) + " covered once",
                                 std::to_string(covered) + " covered"));
    }
  }
  optimizer_->set_steps(steps);
  write_back();
}

}  // namespace vilau
