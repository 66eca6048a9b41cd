// `vilau eval fid` and `vilau eval fid-stats`: Fréchet Inception Distance between image
// folders or stored statistics (docs/evaluation.md, FID).
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "commands.h"
#include "vilau/core/error.h"
#include "vilau/eval/fid.h"
#include "vilau/infer/runtime.h"
#include "vilau/io/atomic_file.h"

namespace vilau::cli {

namespace {

struct FidArgs {
  std::string inception, device = "cpu";
  int64_t batch = 50;
  bool no_progress = false;
};

bool is_stats_file(const std::string& arg) {
  const std::string suffix = ".safetensors";
  return arg.size() >= suffix.size() &&
         arg.compare(arg.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Loads the Inception weights the first time a folder needs them.
class LazyExtractor {
 public:
  explicit LazyExtractor(const FidArgs& args) : args_(args) {}
  eval::FidStats folder_stats(const std::string& option, const std::string& dir) {
    if (args_.inception.empty()) {
      throw ConfigError(describe(option + " " + dir, "image folder",
                                 "--inception WEIGHTS.safetensors to compute its features",
                                 "no --inception"));
    }
    if (!extractor_) {
      extractor_.emplace(eval::FidInception::load(args_.inception, parse_device(args_.device)));
    }
    return extractor_->folder_stats(dir, args_.batch, !args_.no_progress);
  }

 private:
  const FidArgs& args_;
  std::optional<eval::FidFeatureExtractor> extractor_;
};

eval::FidStats side_stats(const std::string& option, const std::string& arg,
                          LazyExtractor& extractor) {
  if (is_stats_file(arg)) {
    return eval::load_fid_stats(arg);
  }
  if (!std::filesystem::is_directory(arg)) {
    throw IoError(describe(option + " " + arg, "FID input",
                           "a folder of images or a .safetensors statistics file",
                           "neither exists"));
  }
  return extractor.folder_stats(option, arg);
}

nlohmann::json summary(const eval::FidStats& stats, const std::string& source) {
  return {{"count", stats.count}, {"d", stats.mu.size(0)}, {"source", source}};
}

void add_shared_options(CLI::App* cmd, FidArgs& args) {
  cmd->add_option("--inception", args.inception,
                  "FID Inception weights (scripts/convert_inception_weights.py)");
  cmd->add_option("--batch", args.batch, "Images per forward pass")->capture_default_str();
  cmd->add_option("--device", args.device, "cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_flag("--no-progress", args.no_progress, "No progress bar");
}

void add_fid(CLI::App& eval) {
  CLI::App* cmd = eval.add_subcommand(
      "fid", "FID between two image folders or .safetensors statistics files, as JSON");
  struct Options {
    FidArgs args;
    std::string real, fake, save_real, save_fake, out;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--real", o->real, "Reference images: a folder or a statistics file")->required();
  cmd->add_option("--fake", o->fake, "Generated images: a folder or a statistics file")->required();
  add_shared_options(cmd, o->args);
  cmd->add_option("--save-real-stats", o->save_real, "Write the reference statistics here");
  cmd->add_option("--save-fake-stats", o->save_fake, "Write the generated statistics here");
  cmd->add_option("--out", o->out, "Also write the result to this JSON file");
  cmd->callback([o] {
    LazyExtractor extractor(o->args);
    const eval::FidStats real = side_stats("--real", o->real, extractor);
    const eval::FidStats fake = side_stats("--fake", o->fake, extractor);
    if (!o->save_real.empty()) {
      eval::save_fid_stats(o->save_real, real);
    }
    if (!o->save_fake.empty()) {
      eval::save_fid_stats(o->save_fake, fake);
    }
    const nlohmann::json result = {{"fid", eval::frechet_distance(real, fake)},
                                   {"real", summary(real, o->real)},
                                   {"fake", summary(fake, o->fake)}};
    if (!o->out.empty()) {
      io::write_file_atomic(o->out, result.dump(2) + "\n");
    }
    std::printf("%s\n", result.dump().c_str());
  });
}

void add_fid_stats(CLI::App& eval) {
  CLI::App* cmd = eval.add_subcommand(
      "fid-stats", "Write the FID statistics (mu, sigma) of an image folder to safetensors");
  struct Options {
    FidArgs args;
    std::string images, out;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--images", o->images, "Folder of .png/.jpg/.jpeg images")->required();
  cmd->add_option("--out", o->out, "Statistics file to write (.safetensors)")->required();
  add_shared_options(cmd, o->args);
  cmd->callback([o] {
    LazyExtractor extractor(o->args);
    const eval::FidStats stats = extractor.folder_stats("--images", o->images);
    eval::save_fid_stats(o->out, stats);
    std::printf("%s\n", summary(stats, o->images).dump().c_str());
  });
}

}  // namespace

void add_eval_fid_command(CLI::App& eval) {
  add_fid(eval);
  add_fid_stats(eval);
}

}  // namespace vilau::cli
