#pragma once
// The step loop every stage shares (internal to src/train): the learning-rate schedule,
// NaN/Inf counting, metrics and the progress bar, stopping, the checkpoint cadence and the
// export. A stage supplies what differs: its step, what its checkpoints hold, its export.
#include <nlohmann/json.hpp>
#include <string>

#include "run.h"
#include "vilau/train/parallel_optimizer.h"
#include "vilau/train/trainer.h"

namespace vilau::train_detail {

class Stage {
 public:
  virtual ~Stage() = default;

  struct Outcome {
    double loss = 0.0;                                  // averaged over micro-batches and ranks
    ParallelOptimizer::Step update;                     // of the stage's main optimizer
    nlohmann::json metrics = nlohmann::json::object();  // stage fields for metrics.jsonl
    int64_t samples = 0, tokens = 0;  // this step's, over all ranks (tokens: 0 if none)
    data::DataPosition position;      // after the step's batches
  };
  // One optimizer step at global step `step` (0-based). Every rank calls it. `log`: the
  // loop logs this step, so metrics that need collectives are wanted.
  virtual Outcome step(int64_t step, double lr_factor, bool log) = 0;
  // The model weights (rank 0; other ranks may leave them empty). Every rank calls it.
  virtual io::NamedTensors weights() = 0;
  // This rank's own files in a checkpoint's staging folder (optimizer shards).
  virtual void write_shards(const std::string& folder) = 0;
  // The official folder; every rank calls it, rank 0 writes and returns the folder.
  virtual std::string export_model() = 0;
  virtual const ParallelOptimizer& optimizer() const = 0;
};

// Runs `stage` from summary.first_step (set by the stage when it resumed) to
// train.max_steps, or to options.stop_after_step.
TrainSummary run_loop(Run& run, Stage& stage, TrainSummary summary, const TrainOptions& options);

}  // namespace vilau::train_detail
