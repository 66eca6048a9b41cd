// `vilau bench ...`: measurements printed as JSON. Timed assertions do not belong in tests.
#include <fcntl.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <vector>

#include "commands.h"
#include "vilau/core/error.h"
#include "vilau/io/tensor_store.h"

namespace vilau::cli {

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The baseline: read() the whole file sequentially into one reusable buffer.
double plain_read(const std::string& path, uint64_t& bytes) {
  const auto start = std::chrono::steady_clock::now();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw IoError(describe(path, "cannot open for the plain-read baseline"));
  }
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  std::vector<char> buffer(16 << 20);
  bytes = 0;
  ssize_t n = 0;
  while ((n = ::read(fd, buffer.data(), buffer.size())) > 0) {
    bytes += static_cast<uint64_t>(n);
  }
  ::close(fd);
  return seconds_since(start);
}

// A zero-copy load: open (map, parse, validate), view every tensor, touch every page so
// the bytes are really resident, release the mapping.
double load_views(const std::string& path, size_t& tensors) {
  const auto start = std::chrono::steady_clock::now();
  {
    const io::TensorStore store = io::TensorStore::open(path);
    const auto all = store.load_all();
    tensors = all.size();
    volatile uint64_t sink = 0;
    for (const auto& [name, t] : all) {
      const auto* p = static_cast<const unsigned char*>(t.data_ptr());
      for (size_t i = 0; i < static_cast<size_t>(t.nbytes()); i += 4096) {
        sink = sink + p[i];
      }
    }
  }
  return seconds_since(start);
}

// A load into an existing model: the same, but every tensor is copied into parameters
// that were allocated (and faulted in) beforehand, as when a constructed model loads.
double load_into(const std::string& path, std::map<std::string, at::Tensor>& params) {
  const auto start = std::chrono::steady_clock::now();
  {
    const io::TensorStore store = io::TensorStore::open(path);
    for (const auto& [name, t] : store.load_all()) {
      params.at(name).copy_(t);
    }
  }
  return seconds_since(start);
}

void create_file(const std::string& path, double gigabytes) {
  const int64_t per_tensor = 32ll << 20;  // 64 MiB of bf16
  const auto total = static_cast<int64_t>(gigabytes * (1ll << 30));
  io::NamedTensors tensors;
  for (int64_t i = 0; i * per_tensor * 2 < total; ++i) {
    tensors.emplace_back(
        "layers." + std::to_string(i) + ".weight",
        torch::full({per_tensor / 4096, 4096}, static_cast<float>(i), torch::kBFloat16));
  }
  io::save_safetensors(path, tensors, {{"format", "pt"}});
}

void bench_load(const std::string& path, int repeats, double create_gb) {
  if (create_gb > 0 && !std::filesystem::exists(path)) {
    create_file(path, create_gb);
  }
  uint64_t bytes = 0;
  size_t tensors = 0;
  // One untimed pass of each warms the page cache: this measures loading, not the disk.
  plain_read(path, bytes);
  load_views(path, tensors);
  std::map<std::string, at::Tensor> params;
  for (const auto& [name, t] : io::TensorStore::open(path).load_all()) {
    params[name] = torch::zeros_like(t);
  }
  double best_read = 1e30, best_load = 1e30, best_copy = 1e30;
  for (int i = 0; i < repeats; ++i) {
    best_read = std::min(best_read, plain_read(path, bytes));
    best_load = std::min(best_load, load_views(path, tensors));
    best_copy = std::min(best_copy, load_into(path, params));
  }
  const double gb = static_cast<double>(bytes) / 1e9;
  const nlohmann::json report = {
      {"bench", "load"},
      {"file", path},
      {"bytes", bytes},
      {"tensors", tensors},
      {"repeats", repeats},
      {"page_cache", "warm"},
      {"plain_read_gbps", gb / best_read},
      {"load_zero_copy_gbps", gb / best_load},
      {"load_zero_copy_vs_plain_read", best_read / best_load},
      {"load_into_model_gbps", gb / best_copy},
      {"load_into_model_vs_plain_read", best_read / best_copy},
  };
  std::printf("%s\n", report.dump(2).c_str());
}

}  // namespace

void add_bench_data_command(CLI::App& bench);      // cmd_bench_data.cpp
void add_bench_generate_command(CLI::App& bench);  // cmd_bench_generate.cpp
void add_bench_decode_command(CLI::App& bench);    // cmd_bench_decode.cpp
void add_bench_train_command(CLI::App& bench);     // cmd_bench_train.cpp

void add_bench_command(CLI::App& app) {
  CLI::App* bench = app.add_subcommand("bench", "Benchmarks; each prints one JSON object");
  bench->require_subcommand(1);
  CLI::App* load_cmd = bench->add_subcommand(
      "load",
      "Checkpoint loading speed from page cache next to a plain sequential read of the same file");
  auto path = std::make_shared<std::string>();
  auto repeats = std::make_shared<int>(3);
  auto create_gb = std::make_shared<double>(0.0);
  load_cmd->add_option("file", *path, "A .safetensors file, a sharded folder or an index")
      ->required();
  load_cmd->add_option("--repeat", *repeats, "Timed repetitions; the best is reported")
      ->capture_default_str();
  load_cmd->add_option("--create-gb", *create_gb,
                       "First write a test file of this many GiB if FILE is missing");
  load_cmd->callback([path, repeats, create_gb] { bench_load(*path, *repeats, *create_gb); });
  add_bench_data_command(*bench);
  add_bench_generate_command(*bench);
  add_bench_decode_command(*bench);
  add_bench_train_command(*bench);
}

}  // namespace vilau::cli
