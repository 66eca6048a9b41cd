#pragma once
// Training checkpoints that survive a crash at any point: each one is written into a hidden
// sibling folder, flushed, then renamed into place, and only then does `root/latest`, the
// commit point, name it. Layout of root/step-00000100/:
//   model.safetensors (or model-0000i-of-0000n.safetensors + model.safetensors.index.json)
//   optimizer.safetensors (when the state has one), rng.safetensors, trainer_state.json,
//   config.yaml, and whatever the ranks wrote into the staging folder (sharded optimizer
//   state: every rank writes its own files there between prepare() and commit()).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "vilau/io/safetensors.h"

namespace vilau::io {

struct TrainingState {
  int64_t step = 0;
  // Loaded back as read-only views of the mapped files: copy them into the parameters.
  NamedTensors model;
  // Optimizer state kept in one file, e.g. "exp_avg.<param>" (empty when the optimizer
  // writes its own shards). Loaded back as owned tensors, since optimizers update their
  // state in place.
  NamedTensors optimizer;
  NamedTensors rng;          // generator states from capture_rng_states()
  nlohmann::json scheduler;  // learning-rate scheduler state
  nlohmann::json data;       // data position: epoch, sample index, shuffle seed...
  std::string config_yaml;   // the resolved run config, for reproducibility
};

// The default generators' states as uint8 tensors: "cpu", plus "cuda:<i>" for every CUDA
// device when CUDA is available.
NamedTensors capture_rng_states();
// The inverse. FormatError for a name it does not know or a state that is not a generator
// state; DeviceError for a CUDA device that is not there. Nothing is restored then.
void restore_rng_states(const NamedTensors& states);

// Saves and finds the checkpoints of one run under `root`. One writer per root at a time.
class CheckpointManager {
 public:
  // keep_last <= 0 keeps every checkpoint. Model weights above max_shard_bytes are sharded
  // HF-style.
  explicit CheckpointManager(std::string root, int64_t keep_last = 3,
                             uint64_t max_shard_bytes = 5ull << 30);

  const std::string& root() const { return root_; }

  // Writes root/step-<step, 8 digits>, replacing a checkpoint of the same step, points
  // `latest` at it, then deletes old checkpoints so that keep_last remain: the one `latest`
  // names and the highest other steps. Returns the checkpoint's folder.
  std::string save(const TrainingState& state);
  // save() in two halves, for state that several processes write: prepare() empties and
  // returns the staging folder of `step` (staging_folder(step) names it for the other
  // processes), then commit() writes the rest into it and moves it into place.
  std::string prepare(int64_t step);
  std::string staging_folder(int64_t step) const;
  std::string commit(const TrainingState& state);
  // The folder `latest` names; nullopt before the first save. IoError when it names a
  // folder that is gone, FormatError when it holds no checkpoint name.
  std::optional<std::string> latest() const;
  // IoError for a missing folder or file, FormatError for a file that is not what save wrote.
  TrainingState load(const std::string& folder) const;
  std::optional<TrainingState> load_latest() const;

 private:
  void remove_temporaries() const;
  void apply_retention(const std::string& keep) const;

  std::string root_;
  int64_t keep_last_;
  uint64_t max_shard_bytes_;
};

}  // namespace vilau::io
