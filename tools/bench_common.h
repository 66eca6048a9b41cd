#pragma once
// What the speed benchmarks share: device timing, the memory-bandwidth floor, the bf16 peak
// for MFU, and the eager PyTorch baseline run in the same command
// (tests/reference/bench/eager_vila_u.py).
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <CLI/CLI.hpp>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace vilau::cli {

// What every model benchmark takes: a checkpoint or a preset, the device and dtype, and the
// python to run the eager baseline with.
struct BenchModel {
  std::string model, preset, device = "cpu", dtype = "auto", eager;
};
void add_bench_model_options(CLI::App* cmd, BenchModel& args);
// ConfigError naming `command` unless one of --model / --preset is given, and --eager comes
// with --preset (the baseline builds the same config with random weights).
void check_bench_model(const BenchModel& args, const std::string& command);

// Seconds on a steady clock after waiting for the device's queued work.
double device_now(at::Device device);

// Sustained bandwidth of the device's memory in bytes/s, the denominator of the
// weight-streaming floor: on a GPU the best of several large copies (read plus write
// bytes), on the CPU the best of several reads of 1 GiB. A shared machine's bandwidth
// drifts, so benchmarks measure it before and after their timed runs and keep the higher.
double memory_bandwidth(at::Device device);

// Dense bf16 peak in FLOP/s of the GPU `device` by its name (nvidia-smi), or nullopt when
// unknown (the CPU, or a GPU missing from the table; --peak-tflops then sets it).
std::optional<double> bf16_peak_flops(at::Device device);

// Bytes of the parameters whose names start with one of `prefixes`.
double parameter_bytes(torch::nn::Module& module, const std::vector<std::string>& prefixes);

// Runs the eager baseline with `args` under `python` and returns its JSON, or an object with
// "error" when it fails (a missing interpreter must not lose the C++ numbers).
nlohmann::json run_eager_baseline(const std::string& python, const std::vector<std::string>& args);

}  // namespace vilau::cli

namespace vilau::cli {

// Operators (all and top-level) and host synchronisations per step, counted by OpTrace as
// the difference between a run of `more` steps and one of `fewer`, so that whatever a run
// does once (prefill, set-up) cancels: {"ops", "top_level_ops", "kernels", "host_syncs"}.
nlohmann::json counts_per_step(const std::function<void(int64_t steps)>& run, int64_t fewer,
                               int64_t more, double steps_between);

// Calls `step` second + 1 times, tracing calls `first` and `second`: true when both
// dispatched the same operators on the same shapes and values (OpTrace::signature).
bool is_static_step(const std::function<void()>& step, int64_t first, int64_t second);

}  // namespace vilau::cli
