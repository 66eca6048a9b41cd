// `vilau bench data`: data-loader throughput (decode, resize, tokenise, batch) against the
// number of worker threads, on a synthetic caption set it writes or on a given dataset.
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "commands.h"
#include "default_corpus.h"
#include "vilau/data/loader.h"
#include "vilau/io/image.h"
#include "vilau/tokenizer/tokenizer.h"

namespace vilau::cli {

namespace fs = std::filesystem;

namespace {

struct BenchDataOptions {
  std::string dataset;  // a config dataset string; empty: a synthetic caption set
  std::string tokenizer;
  std::vector<int64_t> threads = {1, 2, 4};
  int64_t samples = 256;
  int64_t image_size = 256;
  int64_t batch_size = 8;
};

// The synthetic set's folder, removed on every exit, errors included.
struct ScratchDir {
  fs::path path;
  ~ScratchDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
};

// Photo-sized noisy PNGs, so decoding and resizing cost what real images cost.
std::string write_synthetic(const fs::path& dir, int64_t samples) {
  torch::manual_seed(0);
  std::ofstream manifest(dir / "captions.jsonl");
  for (int64_t i = 0; i < samples; ++i) {
    const std::string name = "img_" + std::to_string(i) + ".png";
    const at::Tensor base = torch::linspace(0, 255, 480).view({1, 480, 1}).expand({360, 480, 3});
    const at::Tensor noise = torch::randint(0, 32, {360, 480, 3});
    io::write_image((dir / name).string(), (base + noise).clamp(0, 255).to(torch::kUInt8));
    manifest << nlohmann::json{{"image", name}, {"caption", "synthetic image " + std::to_string(i)}}
                    .dump()
             << "\n";
  }
  return "path=" + (dir / "captions.jsonl").string() + ", format=captions, task=t2i";
}

void bench_data(const BenchDataOptions& options) {
  const ScratchDir scratch{fs::temp_directory_path() /
                           ("vilau_bench_data_" + std::to_string(::getpid()))};
  const fs::path& dir = scratch.path;
  fs::create_directories(dir);
  std::string tokenizer_dir = options.tokenizer;
  if (tokenizer_dir.empty()) {
    tokenizer_dir = (dir / "tokenizer").string();
    train_default_tokenizer(tokenizer_dir, 512);
  }
  const Tokenizer tokenizer = Tokenizer::load(tokenizer_dir);
  const std::string dataset =
      options.dataset.empty() ? write_synthetic(dir, options.samples) : options.dataset;
  nlohmann::json results = nlohmann::json::array();
  for (const int64_t threads : options.threads) {
    data::DataConfig config;
    config.datasets = {dataset};
    config.image_size = options.image_size;
    config.batch_size = options.batch_size;
    config.num_workers = threads;
    config.prefetch = 4;
    config.max_bad_fraction = 1.0;
    data::DataLoader loader(config, tokenizer);
    const auto start = std::chrono::steady_clock::now();
    int64_t samples = 0;
    while (auto batch = loader.next()) {
      samples += static_cast<int64_t>(batch->ids.size());
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    results.push_back({{"threads", threads},
                       {"samples", samples},
                       {"seconds", seconds},
                       {"samples_per_s", static_cast<double>(samples) / seconds}});
  }
  const nlohmann::json report = {
      {"bench", "data"},
      {"dataset", options.dataset.empty() ? "synthetic 480x360 PNG captions" : options.dataset},
      {"image_size", options.image_size},
      {"batch_size", options.batch_size},
      {"hardware_threads", std::thread::hardware_concurrency()},
      {"results", results}};
  std::printf("%s\n", report.dump(2).c_str());
}

}  // namespace

void add_bench_data_command(CLI::App& bench) {
  CLI::App* cmd = bench.add_subcommand(
      "data", "Data-loader samples/s against worker threads, on a synthetic set or a dataset");
  auto options = std::make_shared<BenchDataOptions>();
  cmd->add_option("--dataset", options->dataset,
                  "A dataset as in the data config: \"path=..., format=..., task=...\"");
  cmd->add_option("--tokenizer", options->tokenizer,
                  "Tokenizer folder; default: a small one trained on the bundled corpus");
  cmd->add_option("--threads", options->threads, "Worker thread counts to try")
      ->capture_default_str();
  cmd->add_option("--samples", options->samples, "Size of the synthetic set")
      ->capture_default_str();
  cmd->add_option("--image-size", options->image_size, "Tower input size")->capture_default_str();
  cmd->add_option("--batch-size", options->batch_size, "Samples per batch")->capture_default_str();
  cmd->callback([options] { bench_data(*options); });
}

}  // namespace vilau::cli
