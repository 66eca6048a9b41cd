#include "vilau/core/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "vilau/core/error.h"

namespace vilau {

void init_logging(const std::string& level) {
  const spdlog::level::level_enum parsed = spdlog::level::from_str(level);
  // from_str maps every unknown name to "off", which would silence a typo without a word.
  if (parsed == spdlog::level::off && level != "off") {
    throw ConfigError(describe("--log-level", "unknown log level",
                               "one of trace, debug, info, warn, error, critical, off",
                               "'" + level + "'"));
  }
  // stderr keeps stdout clean for the JSON that commands print.
  auto logger = std::make_shared<spdlog::logger>(
      "vilau", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  logger->set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
  logger->set_level(parsed);
  spdlog::set_default_logger(logger);
}

}  // namespace vilau
