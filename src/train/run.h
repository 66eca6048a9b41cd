#pragma once
// What every stage's loop shares: device and precision, the run folder, checkpoints with
// fallback to an older one, metrics and progress. Internal to src/train.
#include <torch/torch.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "vilau/core/progress.h"
#include "vilau/data/loader.h"
#include "vilau/io/training_checkpoint.h"
#include "vilau/tokenizer/tokenizer.h"
#include "vilau/train/trainer.h"

namespace vilau::train_detail {

class Run {
 public:
  Run(const Config& config, const std::string& config_yaml, const ProcessGroup& group);

  const Config& config;
  const TrainConfig& train;
  const ProcessGroup& group;
  at::Device device{at::kCPU};
  at::ScalarType dtype = at::kFloat;  // parameters and activations; masters are fp32
  std::string config_yaml;

  bool is_main() const { return group.rank() == 0; }
  std::string tokenizer_dir() const;

  // The newest checkpoint that loads; a broken one is reported and the previous one used.
  std::optional<io::TrainingState> resume(std::string* folder) const;
  // Every rank must call it (positions and RNG states are gathered). Each rank's
  // write_shards writes its own files (optimizer shards) into the checkpoint's staging
  // folder; rank 0 writes the rest and commits.
  void save(io::TrainingState state, const data::DataPosition& position,
            const std::function<void(const std::string& folder)>& write_shards);
  // This rank's data position and RNG state from a checkpoint. A checkpoint saved on
  // another number of ranks continues where the whole run was: the samples consumed by all
  // ranks are split evenly over the ranks now (ConfigError when they cannot be).
  data::DataPosition position_of(const io::TrainingState& state) const;
  void restore_rng(const io::TrainingState& state) const;

  void log(const nlohmann::json& record);  // metrics.jsonl on rank 0
  // Writes `weights` (our names) as output_dir/export in the official layout, with the
  // tokenizer of train.init or train.tokenizer; returns the folder. Rank 0 only.
  std::string export_model(const ModelConfig& model,
                           const std::map<std::string, at::Tensor>& weights) const;
  // Counts a step whose update was skipped for a NaN/Inf; Error past max_skipped_steps.
  void count_skipped(TrainSummary& summary, int64_t step, double grad_norm) const;
  // Whether a checkpoint is written after `step`: every save_every steps and at the end.
  bool checkpoint_due(int64_t step) const {
    return (train.save_every > 0 && step % train.save_every == 0) || step == train.max_steps;
  }

  // The next batch, starting the next epoch when one ends.
  static data::DataBatch next_batch(data::DataLoader& loader);
  MultimodalBatch to_device(const MultimodalBatch& batch) const;

 private:
  std::unique_ptr<io::CheckpointManager> checkpoints_;
  std::unique_ptr<MetricsWriter> metrics_;
};

using TensorMap = std::map<std::string, at::Tensor>;
TensorMap as_map(const io::NamedTensors& tensors);
io::NamedTensors as_named(const TensorMap& tensors);

// A scalar that all ranks average (loss parts for logging).
double mean_over_ranks(const ProcessGroup& group, double value);

TrainSummary train_multimodal(Run& run, const TrainOptions& options);
TrainSummary train_tower(Run& run, const TrainOptions& options);

}  // namespace vilau::train_detail
