#pragma once
// `vilau train`: one entry point for every stage. The run folder (train.output_dir) holds
// config.yaml (the resolved config), metrics.jsonl, checkpoints/ and, at the end, export/
// in the official folder format. A run that finds a checkpoint there resumes from it.
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "vilau/config.h"
#include "vilau/dist/data_parallel.h"
#include "vilau/dist/process_group.h"

namespace vilau {

class ParallelOptimizer;

struct TrainOptions {
  // Stop after this global step without the final checkpoint or export, as if the process
  // had been killed there (tests of resuming). Negative: run to the end.
  int64_t stop_after_step = -1;
  bool progress = true;  // the progress bar on rank 0
  // Called on every rank after each optimizer step with the step number and the optimizer
  // of the trained model (the generator's in the tower stage), e.g. to inspect when the
  // gradient collectives ran.
  std::function<void(int64_t step, const ParallelOptimizer& optimizer)> after_step;
  // Tests only: deliberate gradient-sync bugs the equivalence tests must catch.
  GradientSync::Faults faults;
};

struct TrainSummary {
  int64_t first_step = 0;      // where this run started (after resuming)
  int64_t last_step = 0;       // the number of steps done
  std::vector<double> losses;  // per step of this run, averaged over ranks and micro-batches
  int64_t skipped_steps = 0;
  std::string resumed_from;  // checkpoint folder, empty for a fresh start
  std::string export_dir;    // empty when not exported
};

// train.device resolved: "auto" is GPU LOCAL_RANK when CUDA is available, else the CPU;
// explicit names as `--device` takes them (DeviceError for CUDA without a GPU).
class VilaUImpl;

// The parameters of the top-level `modules` ("llm", "mm_projector", ...) as
// "<module>.<name>", which start requiring grad; every other parameter stops.
std::vector<std::pair<std::string, at::Tensor>> select_trainable(
    VilaUImpl& model, const std::vector<std::string>& modules);

at::Device training_device(const TrainConfig& train, int64_t local_rank);

// ZeRO-3 (the optimizer's units): runs the model's decoder layers and depth-transformer
// blocks through the optimizer's gather / recompute / free wrapper. No-op otherwise.
void shard_blocks(VilaUImpl& model, ParallelOptimizer& optimizer);

// `config` needs a train section and a data section, and a model section unless
// train.init names a model folder. `config_yaml` is saved with the run and its checkpoints.
TrainSummary train(const Config& config, const std::string& config_yaml, const ProcessGroup& group,
                   const TrainOptions& options = {});

}  // namespace vilau
