// `vilau config show FILE [--set a.b=v ...]`: the fully resolved, validated config.
#include <cstdio>
#include <string>
#include <vector>

#include "commands.h"
#include "vilau/config.h"

namespace vilau::cli {

void add_config_command(CLI::App& app) {
  CLI::App* config = app.add_subcommand("config", "Inspect YAML configs");
  config->require_subcommand(1);

  CLI::App* show = config->add_subcommand(
      "show", "Print a config with its defaults chain, overrides and default values resolved");
  auto file = std::make_shared<std::string>();
  auto overrides = std::make_shared<std::vector<std::string>>();
  show->add_option("file", *file, "YAML config file")->required();
  show->add_option("--set", *overrides, "Override a key: --set model.llm.num_layers=4")
      ->allow_extra_args(false);
  show->callback([file, overrides] {
    const Config resolved = load_run_config(*file, *overrides);
    std::fputs(to_yaml(resolved).c_str(), stdout);
  });
}

}  // namespace vilau::cli
