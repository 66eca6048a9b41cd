// Loading a config tree: YAML parsing with origins, `defaults:` chains, overrides.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "config_node.h"
#include "vilau/core/error.h"
#include "vilau/core/file.h"

namespace fs = std::filesystem;

namespace vilau {

std::string ConfigNode::where() const {
  if (line == 0) {
    return "override '--set " + origin + "'";
  }
  return origin + ":" + std::to_string(line) + ":" + std::to_string(column);
}

std::string ConfigNode::describe_found() const {
  switch (kind) {
    case Kind::null:
      return "null";
    case Kind::sequence:
      return "a list";
    case Kind::map:
      return "a mapping";
    case Kind::scalar:
      break;
  }
  return (quoted ? "the string \"" : "'") + scalar + (quoted ? "\"" : "'");
}

ConfigNode* ConfigNode::find(const std::string& key) {
  for (auto& [name, child] : entries) {
    if (name == key) {
      return &child;
    }
  }
  return nullptr;
}

const ConfigNode* ConfigNode::find(const std::string& key) const {
  return const_cast<ConfigNode*>(this)->find(key);
}

namespace {

// Aliases share nodes in yaml-cpp's tree, but the config tree copies them, so a document
// of a few lines can expand exponentially (a "billion laughs"). Real configs have a few
// hundred nodes; these bounds refuse such a document, and one nested deeper than any config,
// before it takes the memory or the stack.
constexpr int64_t kMaxConfigNodes = 1000000;
constexpr int kMaxConfigDepth = 200;

struct Budget {
  int64_t nodes = kMaxConfigNodes;
  int depth = 0;
};

ConfigNode convert(const YAML::Node& node, const std::string& origin, Budget& budget) {
  if (--budget.nodes < 0 || budget.depth > kMaxConfigDepth) {
    throw ConfigError(describe(origin, "YAML document too large",
                               "at most " + std::to_string(kMaxConfigNodes) +
                                   " nodes once aliases are expanded and at most " +
                                   std::to_string(kMaxConfigDepth) + " levels of nesting",
                               budget.nodes < 0 ? "more nodes" : "deeper nesting"));
  }
  struct Level {
    explicit Level(Budget& b) : budget(b) { ++budget.depth; }
    ~Level() { --budget.depth; }
    Budget& budget;
  } level(budget);
  ConfigNode out;
  out.origin = origin;
  const YAML::Mark mark = node.Mark();
  out.line = mark.line + 1;
  out.column = mark.column + 1;
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      out.kind = ConfigNode::Kind::null;
      break;
    case YAML::NodeType::Scalar:
      out.kind = ConfigNode::Kind::scalar;
      out.scalar = node.Scalar();
      out.quoted = node.Tag() == "!";
      break;
    case YAML::NodeType::Sequence:
      out.kind = ConfigNode::Kind::sequence;
      for (const auto& item : node) {
        out.items.push_back(convert(item, origin, budget));
      }
      break;
    case YAML::NodeType::Map:
      out.kind = ConfigNode::Kind::map;
      for (const auto& kv : node) {
        const std::string key = kv.first.Scalar();
        ConfigNode key_node = convert(kv.first, origin, budget);
        if (out.find(key) != nullptr) {
          throw ConfigError(describe(key_node.where(), "duplicate key '" + key + "'"));
        }
        out.entries.emplace_back(key, convert(kv.second, origin, budget));
        // Point the entry at its key, where a reader of the file looks for it.
        out.entries.back().second.line = key_node.line;
        out.entries.back().second.column = key_node.column;
      }
      break;
  }
  return out;
}

ConfigNode parse_text(const std::string& text, const std::string& origin) {
  YAML::Node doc;
  try {
    doc = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw ConfigError(describe(
        origin + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1),
        "malformed YAML: " + e.msg));
  }
  Budget budget;
  ConfigNode root = convert(doc, origin, budget);
  if (root.kind == ConfigNode::Kind::null) {  // an empty file is an empty config
    root.kind = ConfigNode::Kind::map;
    root.line = root.column = 1;
  }
  if (root.kind != ConfigNode::Kind::map) {
    throw ConfigError(
        describe(root.where(), "top level of a config", "a mapping", root.describe_found()));
  }
  return root;
}

// Later values win; mappings merge key by key, anything else is replaced whole.
void merge_into(ConfigNode& base, const ConfigNode& top) {
  if (base.kind != ConfigNode::Kind::map || top.kind != ConfigNode::Kind::map) {
    base = top;
    return;
  }
  for (const auto& [key, child] : top.entries) {
    if (ConfigNode* existing = base.find(key)) {
      merge_into(*existing, child);
    } else {
      base.entries.emplace_back(key, child);
    }
  }
  base.origin = top.origin;
  base.line = top.line;
  base.column = top.column;
}

std::string read_file(const fs::path& path, const std::string& context) {
  // A FIFO, a device or a directory given as a config (or a defaults: entry) is refused.
  return read_regular_file(path.string(), "a YAML config (" + context + ")");
}

ConfigNode load_file(const fs::path& path, std::vector<fs::path>& chain,
                     const std::string& context) {
  const std::string text = read_file(path, context);
  const fs::path canonical = fs::weakly_canonical(path);
  if (std::find(chain.begin(), chain.end(), canonical) != chain.end()) {
    std::string cycle;
    for (const auto& p : chain) {
      cycle += p.string() + " -> ";
    }
    throw ConfigError(describe(context, "cycle in defaults: " + cycle + canonical.string()));
  }
  chain.push_back(canonical);

  ConfigNode root = parse_text(text, path.string());
  ConfigNode merged;
  merged.kind = ConfigNode::Kind::map;
  auto defaults_it = std::find_if(root.entries.begin(), root.entries.end(),
                                  [](const auto& kv) { return kv.first == "defaults"; });
  if (defaults_it != root.entries.end()) {
    const ConfigNode defaults = defaults_it->second;
    root.entries.erase(defaults_it);
    std::vector<ConfigNode> parents;
    if (defaults.kind == ConfigNode::Kind::scalar) {
      parents.push_back(defaults);
    } else if (defaults.kind == ConfigNode::Kind::sequence) {
      parents = defaults.items;
    } else {
      throw ConfigError(describe(defaults.where(), "defaults",
                                 "a file name or a list of file names", defaults.describe_found()));
    }
    for (const ConfigNode& parent : parents) {
      if (parent.kind != ConfigNode::Kind::scalar) {
        throw ConfigError(
            describe(parent.where(), "defaults entry", "a file name", parent.describe_found()));
      }
      const fs::path parent_path = path.parent_path() / parent.scalar;
      merge_into(merged, load_file(parent_path, chain, parent.where() + ": defaults"));
    }
  }
  chain.pop_back();
  merge_into(merged, root);
  return merged;
}

void mark_as_override(ConfigNode& node, const std::string& text) {
  node.origin = text;
  node.line = 0;
  for (auto& item : node.items) {
    mark_as_override(item, text);
  }
  for (auto& entry : node.entries) {
    mark_as_override(entry.second, text);
  }
}

// "a.b.c=value": walks the path, creating mappings on the way; the reader later rejects
// any key the schema does not know, naming this override as the culprit.
void apply_override(ConfigNode& root, const std::string& text) {
  const auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw ConfigError(describe("override '--set " + text + "'", "malformed override",
                               "KEY.PATH=VALUE", "'" + text + "'"));
  }
  const std::string path = text.substr(0, eq);
  ConfigNode value = parse_text("v: " + text.substr(eq + 1), text).entries.at(0).second;

  ConfigNode* node = &root;
  std::string walked;
  std::istringstream parts(path);
  std::string key;
  std::vector<std::string> keys;
  while (std::getline(parts, key, '.')) {
    if (key.empty()) {
      throw ConfigError(
          describe("override '--set " + text + "'", "empty key in path '" + path + "'"));
    }
    keys.push_back(key);
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    if (node->kind == ConfigNode::Kind::null) {
      node->kind = ConfigNode::Kind::map;
    }
    if (node->kind != ConfigNode::Kind::map) {
      throw ConfigError(describe("override '--set " + text + "'",
                                 "cannot descend into '" + walked + "'", "a mapping",
                                 node->describe_found()));
    }
    ConfigNode* child = node->find(keys[i]);
    if (child == nullptr) {
      ConfigNode fresh;
      fresh.origin = text;  // line 0 marks it as an override
      node->entries.emplace_back(keys[i], fresh);
      child = &node->entries.back().second;
    }
    walked += (walked.empty() ? "" : ".") + keys[i];
    node = child;
  }
  mark_as_override(value, text);
  *node = value;
}

}  // namespace

ConfigTree::ConfigTree(std::unique_ptr<ConfigNode> root) : root_(std::move(root)) {}
ConfigTree::ConfigTree(ConfigTree&&) noexcept = default;
ConfigTree& ConfigTree::operator=(ConfigTree&&) noexcept = default;
ConfigTree::~ConfigTree() = default;

ConfigTree ConfigTree::load(const std::string& path, const std::vector<std::string>& overrides) {
  std::vector<fs::path> chain;
  auto root = std::make_unique<ConfigNode>(load_file(path, chain, "config"));
  for (const std::string& text : overrides) {
    apply_override(*root, text);
  }
  return ConfigTree(std::move(root));
}

ConfigTree ConfigTree::parse(const std::string& text, const std::string& name) {
  return ConfigTree(std::make_unique<ConfigNode>(parse_text(text, name)));
}

}  // namespace vilau
