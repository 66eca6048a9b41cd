// `vilau inspect PATH` and `vilau inspect --preset NAME`: what a checkpoint or a preset
// holds, checked against what its config implies.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>

#include "commands.h"
#include "presets.h"
#include "vilau/config.h"
#include "vilau/core/error.h"
#include "vilau/io/tensor_store.h"
#include "vilau/model/official_checkpoint.h"

namespace fs = std::filesystem;

namespace vilau::cli {

namespace {

std::string human(double n) {
  const char* units[] = {"", " K", " M", " B"};
  int u = 0;
  while (n >= 1000.0 && u < 3) {
    n /= 1000.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f%s", n, units[u]);
  return buf;
}

struct Row {
  std::string name;
  const io::TensorInfo* info;
};

void print_table(const std::vector<Row>& rows) {
  std::printf("%-80s %-5s %-22s %14s\n", "tensor", "dtype", "shape", "bytes");
  for (const Row& r : rows) {
    std::printf("%-80s %-5s %-22s %14llu\n", r.name.c_str(), io::dtype_name(r.info->dtype),
                io::shape_text(r.info->shape).c_str(),
                static_cast<unsigned long long>(r.info->end - r.info->begin));
  }
}

void print_totals(const std::vector<Row>& rows) {
  std::map<std::string, std::pair<int64_t, uint64_t>> groups;  // component -> (values, bytes)
  int64_t values = 0;
  uint64_t bytes = 0;
  for (const Row& r : rows) {
    auto& g = groups[component_group(r.name)];
    g.first += r.info->numel();
    g.second += r.info->end - r.info->begin;
    values += r.info->numel();
    bytes += r.info->end - r.info->begin;
  }
  std::printf("\n%-34s %16s %16s\n", "component", "values", "bytes");
  for (const auto& [name, g] : groups) {
    std::printf("%-34s %16s %16s\n", name.c_str(), human(static_cast<double>(g.first)).c_str(),
                human(static_cast<double>(g.second)).c_str());
  }
  std::printf("%-34s %16s %16s  (%zu tensors)\n", "total",
              human(static_cast<double>(values)).c_str(), human(static_cast<double>(bytes)).c_str(),
              rows.size());
}

void inspect_official(const std::string& path, bool table) {
  const OfficialCheckpoint ckpt = OfficialCheckpoint::open(path);
  Config shown;
  shown.model = ckpt.config();
  std::printf("official VILA-U checkpoint %s\n\n%s\n", ckpt.root().c_str(), to_yaml(shown).c_str());
  std::vector<Row> rows;
  for (const std::string& name : ckpt.names()) {
    rows.push_back({name, &ckpt.info(name)});
  }
  if (table) {
    print_table(rows);
  }
  print_totals(rows);
  const TensorCheck check = ckpt.check();
  std::printf("\ncheck: %s\n", check.summary(1000).c_str());
  if (!check.ok()) {
    throw ShapeError(describe(path, "checkpoint does not match its config", {}, check.summary()));
  }
}

void inspect_store(const std::string& path, bool table) {
  const io::TensorStore store = io::TensorStore::open(path);
  std::printf("safetensors %s: %zu file(s)\n", path.c_str(), store.files().size());
  for (const auto& file : store.files()) {
    for (const auto& [key, value] : file.metadata()) {
      std::printf("  metadata %s = %s\n", key.c_str(), value.c_str());
    }
  }
  std::vector<Row> rows;
  for (const std::string& name : store.names()) {
    rows.push_back({name, &store.info(name)});
  }
  if (table) {
    print_table(rows);
  }
  print_totals(rows);
  std::printf("\ncheck: header, offsets and shard index valid\n");
}

// Counts from shapes alone: nothing is allocated, so the 7B presets are instant.
void inspect_preset(const std::string& name) {
  const ModelConfig model = load_preset(name);
  std::printf("preset %s (%s)\n", name.c_str(), model.name.c_str());
  std::printf("%-34s %20s %20s\n", "component", "parameters", "buffers");
  int64_t params = 0, buffers = 0, tower = 0;
  for (const ComponentCount& c : count_parameters(model)) {
    std::printf("%-34s %20lld %20lld\n", c.component.c_str(), static_cast<long long>(c.parameters),
                static_cast<long long>(c.buffers));
    params += c.parameters;
    buffers += c.buffers;
    if (c.component.rfind("vision_tower.", 0) == 0) {
      tower += c.parameters + c.buffers;
    }
  }
  std::printf("%-34s %20lld %20lld\n", "total", static_cast<long long>(params),
              static_cast<long long>(buffers));
  std::printf("vision_tower/ file (parameters + buffers, as stored): %s\n",
              human(static_cast<double>(tower)).c_str());
  std::printf(
      "convention: parameters are nn.Parameter values, including the EMA-updated codebook "
      "weights;\n"
      "buffers are the codebooks' EMA statistics (cluster_size_ema, embed_ema).\n");
}

}  // namespace

void add_inspect_command(CLI::App& app) {
  CLI::App* inspect = app.add_subcommand(
      "inspect", "Tensor table, parameter counts and checks of a checkpoint or a preset");
  auto path = std::make_shared<std::string>();
  auto preset = std::make_shared<std::string>();
  auto summary = std::make_shared<bool>(false);
  auto* path_opt = inspect->add_option(
      "path", *path, "A .safetensors file, a sharded folder or an official folder");
  auto* preset_opt =
      inspect->add_option("--preset", *preset, "tiny, 7b-256, 7b-384 or a preset YAML file");
  path_opt->excludes(preset_opt);
  inspect->add_flag("--summary", *summary, "Leave out the per-tensor table");
  inspect->callback([path, preset, summary] {
    if (!preset->empty()) {
      inspect_preset(*preset);
    } else if (path->empty()) {
      throw ConfigError(describe("vilau inspect", "nothing to inspect", "PATH or --preset NAME"));
    } else if (fs::is_directory(*path) && fs::exists(fs::path(*path) / "config.json") &&
               fs::exists(fs::path(*path) / "llm")) {
      inspect_official(*path, !*summary);
    } else {
      inspect_store(*path, !*summary);
    }
  });
}

}  // namespace vilau::cli
