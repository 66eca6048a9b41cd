#include "bench_common.h"

#include <torch/cuda.h>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>

#include "vilau/core/error.h"
#include "vilau/core/op_trace.h"

namespace vilau::cli {

namespace {

std::string run_capture(const std::string& command) {
  std::string out;
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(::popen(command.c_str(), "r"), ::pclose);
  if (!pipe) return out;
  std::array<char, 4096> buffer{};
  size_t n = 0;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe.get())) > 0) {
    out.append(buffer.data(), n);
  }
  return out;
}

std::string quoted(const std::string& arg) {
  std::string out = "'";
  for (char c : arg) {
    out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  }
  return out + "'";
}

}  // namespace

void add_bench_model_options(CLI::App* cmd, BenchModel& args) {
  CLI::Option* model = cmd->add_option("--model", args.model, "A VILA-U checkpoint folder");
  CLI::Option* preset =
      cmd->add_option("--preset", args.preset, "Or a randomly initialised preset (tiny, 7b-256)");
  model->excludes(preset);
  cmd->add_option("--device", args.device, "cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_option("--dtype", args.dtype, "auto (bf16 on GPU, fp32 on CPU), bf16, fp16, fp32")
      ->capture_default_str();
  cmd->add_option("--eager", args.eager,
                  "Also time the eager PyTorch baseline with this python (presets only)");
}

void check_bench_model(const BenchModel& args, const std::string& command) {
  if (args.model.empty() && args.preset.empty()) {
    throw ConfigError(describe(command, "no model", "--model DIR or --preset NAME"));
  }
  if (!args.eager.empty() && args.preset.empty()) {
    throw ConfigError(describe("--eager", "baseline",
                               "--preset (the baseline builds the same config with random "
                               "weights)",
                               "--model"));
  }
}

double device_now(at::Device device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double memory_bandwidth(at::Device device) {
  double best = 1e30;
  if (device.is_cuda()) {
    // Far larger than any cache, so the copy streams from memory.
    const at::Tensor src =
        torch::ones({int64_t{1} << 29}, torch::dtype(torch::kBFloat16).device(device));
    at::Tensor dst = torch::empty_like(src);
    dst.copy_(src);
    for (int i = 0; i < 5; ++i) {
      const double start = device_now(device);
      dst.copy_(src);
      best = std::min(best, device_now(device) - start);
    }
    return 2.0 * static_cast<double>(src.nbytes()) / best;
  }
  // On the CPU a step reads its weights and writes next to nothing: a read stream (a sum,
  // on every intra-op thread) over 1 GiB, 32 times the largest last-level caches here.
  const at::Tensor src = torch::ones({int64_t{1} << 28}, torch::dtype(torch::kFloat));
  for (int i = 0; i < 5; ++i) {
    const double start = device_now(device);
    const at::Tensor total = src.sum();
    best = std::min(best, device_now(device) - start);
  }
  return static_cast<double>(src.nbytes()) / best;
}

std::optional<double> bf16_peak_flops(at::Device device) {
  if (!device.is_cuda()) return std::nullopt;
  const std::string name =
      run_capture("nvidia-smi --query-gpu=name --format=csv,noheader -i " +
                  std::to_string(device.has_index() ? device.index() : 0) + " 2>/dev/null");
  // Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets.
  const std::pair<const char*, double> table[] = {
      {"H200", 989e12}, {"H100 PCIe", 756e12}, {"H100", 989e12}, {"A100", 312e12},
      {"L40S", 362e12}, {"A10", 125e12},       {"4090", 165e12}};
  for (const auto& [key, flops] : table) {
    if (name.find(key) != std::string::npos) return flops;
  }
  return std::nullopt;
}

double parameter_bytes(torch::nn::Module& module, const std::vector<std::string>& prefixes) {
  double bytes = 0;
  for (const auto& p : module.named_parameters()) {
    for (const std::string& prefix : prefixes) {
      if (p.key().rfind(prefix, 0) == 0) {
        bytes += static_cast<double>(p.value().nbytes());
        break;
      }
    }
  }
  return bytes;
}

nlohmann::json run_eager_baseline(const std::string& python, const std::vector<std::string>& args) {
  std::string command = quoted(python) + " " + quoted(VILAU_EAGER_BENCH);
  for (const std::string& a : args) command += " " + quoted(a);
  const std::string out = run_capture(command);
  // The script prints one JSON object on stdout; its logs go to stderr.
  const size_t begin = out.find('{'), end = out.rfind('}');
  if (begin != std::string::npos && end != std::string::npos && end > begin) {
    try {
      return nlohmann::json::parse(out.substr(begin, end - begin + 1));
    } catch (const nlohmann::json::exception&) {
    }
  }
  return {{"error", "the eager baseline printed no JSON"}, {"command", command}};
}

}  // namespace vilau::cli

namespace vilau::cli {

nlohmann::json counts_per_step(const std::function<void(int64_t steps)>& run, int64_t fewer,
                               int64_t more, double steps_between) {
  struct Counts {
    std::array<double, 4> totals;
    std::map<std::string, double> by_name;
  };
  const auto counted = [&](int64_t steps) {
    OpTrace trace;
    run(steps);
    trace.stop();
    Counts c{{static_cast<double>(trace.ops()), static_cast<double>(trace.top_level_ops()),
              static_cast<double>(trace.host_syncs()), static_cast<double>(trace.kernels())},
             {}};
    for (const OpTrace::Call& call : trace.calls()) c.by_name[call.name] += 1;
    return c;
  };
  const Counts a = counted(fewer), b = counted(more);
  // The operators a step dispatches most, so that a count can be traced to its source.
  std::vector<std::pair<double, std::string>> names;
  for (const auto& [name, n] : b.by_name) {
    const auto before = a.by_name.find(name);
    const double per_step =
        (n - (before == a.by_name.end() ? 0.0 : before->second)) / steps_between;
    if (per_step > 0) names.emplace_back(per_step, name);
  }
  std::sort(names.rbegin(), names.rend());
  nlohmann::json most = nlohmann::json::object();
  for (size_t i = 0; i < std::min<size_t>(names.size(), 12); ++i) {
    most[names[i].second] = names[i].first;
  }
  const auto& x = a.totals;
  const auto& y = b.totals;
  return {{"ops", (y[0] - x[0]) / steps_between},
          {"top_level_ops", (y[1] - x[1]) / steps_between},
          {"host_syncs", (y[2] - x[2]) / steps_between},
          {"kernels", (y[3] - x[3]) / steps_between},
          {"most_dispatched", most}};
}

bool is_static_step(const std::function<void()>& step, int64_t first, int64_t second) {
  std::string a, b;
  for (int64_t i = 0; i <= second; ++i) {
    if (i != first && i != second) {
      step();
      continue;
    }
    OpTrace trace;
    step();
    trace.stop();
    (i == first ? a : b) = trace.signature();
  }
  return a == b;
}

}  // namespace vilau::cli
