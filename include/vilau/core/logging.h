#pragma once
#include <string>

namespace vilau {

// Sets up the process-wide spdlog logger on stderr. `level` is one of trace, debug, info,
// warn, error, critical or off; anything else is a ConfigError naming the choices.
void init_logging(const std::string& level);

}  // namespace vilau
