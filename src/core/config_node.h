#pragma once
// Internal: the config tree. yaml-cpp nodes know their line but not their file, and a
// resolved config mixes several files and command-line overrides, so each node carries
// its own origin.
#include <string>
#include <utility>
#include <vector>

#include "vilau/core/config.h"

namespace vilau {

struct ConfigNode {
  enum class Kind { null, scalar, sequence, map };

  Kind kind = Kind::null;
  std::string scalar;
  bool quoted = false;  // "12" is a string, 12 is a number
  std::vector<ConfigNode> items;
  std::vector<std::pair<std::string, ConfigNode>> entries;  // file order is kept for printing

  std::string origin;  // a file name, or the override text "--set a.b=v"
  int line = 0;        // 1-based; 0 when the origin is an override
  int column = 0;

  // "file:line:col" or "override '--set a.b=v'".
  std::string where() const;
  // "a mapping", "a list", "null" or the scalar in quotes, for "found ..." messages.
  std::string describe_found() const;

  ConfigNode* find(const std::string& key);
  const ConfigNode* find(const std::string& key) const;
};

}  // namespace vilau
