// The `vilau` command line. Subcommands are registered in kCommands, nowhere else.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "commands.h"
#include "vilau/core/error.h"
#include "vilau/core/logging.h"
#include "vilau/version.h"

namespace {

using AddCommand = void (*)(CLI::App&);
constexpr AddCommand kCommands[] = {
    vilau::cli::add_info_command,      vilau::cli::add_config_command,
    vilau::cli::add_inspect_command,   vilau::cli::add_bench_command,
    vilau::cli::add_tokenizer_command, vilau::cli::add_vision_commands,
    vilau::cli::add_init_command,      vilau::cli::add_train_command,
    vilau::cli::add_chat_command,      vilau::cli::add_generate_command,
    vilau::cli::add_data_command,      vilau::cli::add_eval_command,
    vilau::cli::add_demo_command,      vilau::cli::add_plan_command,
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"vilau: train and run VILA-U models on LibTorch", "vilau"};
  app.set_version_flag("--version", std::string("vilau ") + VILAU_VERSION);
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical or off")
      ->capture_default_str();
  // Logging must be ready before any subcommand callback runs.
  app.parse_complete_callback([&log_level] { vilau::init_logging(log_level); });
  for (AddCommand add : kCommands) {
    add(app);
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const vilau::Error& e) {
    std::fprintf(stderr, "vilau: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vilau: internal error: %s\n", e.what());
    return 3;
  }
  return 0;
}
