#pragma once
// Typed configs from YAML.
//
// A config struct lists its keys once, in a `visit` template that serves both reading
// and printing:
//
//   struct LlmConfig {
//     int64_t hidden_size = 0;
//     double rope_theta = 10000.0;
//     template <class V> void visit(V& v) {
//       v.field("hidden_size", hidden_size, required);
//       v.field("rope_theta", rope_theta);
//     }
//   };
//
// Files may extend others with `defaults: base.yaml` (or a list, merged in order, the
// file itself last), and `--set a.b=value` overrides are applied on top. Every node keeps
// the file and line it came from, so unknown keys, wrong types and missing required keys
// are reported as `file:line:col: key.path: ...`.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace vilau {

struct ConfigNode;  // a YAML node with its source location; defined in src/core

enum class Need { optional, required };
inline constexpr Need required = Need::required;

// The merged tree of one config file, its `defaults:` chain and the overrides.
class ConfigTree {
 public:
  // Loads `path`, resolves `defaults:` relative to each file, then applies overrides of
  // the form "a.b=value" (value parsed as YAML, so lists like "[1,2]" work).
  static ConfigTree load(const std::string& path, const std::vector<std::string>& overrides = {});
  // Parses YAML text; `name` stands in for the file name in messages.
  static ConfigTree parse(const std::string& text, const std::string& name);

  ConfigTree(ConfigTree&&) noexcept;
  ConfigTree& operator=(ConfigTree&&) noexcept;
  ~ConfigTree();

  const ConfigNode& root() const { return *root_; }

 private:
  explicit ConfigTree(std::unique_ptr<ConfigNode> root);
  std::unique_ptr<ConfigNode> root_;
};

// Fills a struct from a tree, rejecting unknown keys, wrong types and missing keys.
class ConfigReader {
 public:
  explicit ConfigReader(const ConfigNode& root);
  ~ConfigReader();

  void field(const char* key, bool& value, Need need = Need::optional);
  void field(const char* key, int64_t& value, Need need = Need::optional);
  void field(const char* key, double& value, Need need = Need::optional);
  void field(const char* key, std::string& value, Need need = Need::optional);
  void field(const char* key, std::vector<int64_t>& value, Need need = Need::optional);
  void field(const char* key, std::vector<double>& value, Need need = Need::optional);
  void field(const char* key, std::vector<std::string>& value, Need need = Need::optional);

  template <class T>
  auto field(const char* key, T& section, Need need = Need::optional)
      -> decltype(section.visit(*this)) {
    if (enter(key, need)) {
      section.visit(*this);
      leave();
    }
  }
  template <class T>
  void field(const char* key, std::optional<T>& section, Need need = Need::optional) {
    if (enter(key, need)) {
      section.emplace();
      section->visit(*this);
      leave();
    }
  }

  // Reads the whole tree into `config`; the root map must hold only known keys.
  template <class T>
  void read(T& config) {
    config.visit(*this);
    check_unknown_keys();
  }

 private:
  struct Frame;
  bool enter(const char* key, Need need);
  void leave();
  void check_unknown_keys();
  const ConfigNode* take(const char* key, Need need);
  std::string path_of(const char* key) const;
  std::vector<Frame> stack_;
};

// Prints a struct as YAML, every key with its resolved value.
class ConfigWriter {
 public:
  ConfigWriter();
  ~ConfigWriter();

  void field(const char* key, const bool& value, Need = Need::optional);
  void field(const char* key, const int64_t& value, Need = Need::optional);
  void field(const char* key, const double& value, Need = Need::optional);
  void field(const char* key, const std::string& value, Need = Need::optional);
  void field(const char* key, const std::vector<int64_t>& value, Need = Need::optional);
  void field(const char* key, const std::vector<double>& value, Need = Need::optional);
  void field(const char* key, const std::vector<std::string>& value, Need = Need::optional);

  template <class T>
  auto field(const char* key, T& section, Need = Need::optional) -> decltype(section.visit(*this)) {
    begin_map(key);
    section.visit(*this);
    end_map();
  }
  template <class T>
  void field(const char* key, std::optional<T>& section, Need = Need::optional) {
    if (section) {
      field(key, *section);
    }
  }

  // Prints `config`; one writer prints one config.
  template <class T>
  std::string write(T config) {
    config.visit(*this);
    return finish();
  }

 private:
  void begin_map(const char* key);
  void end_map();
  std::string finish();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Semantic checks after reading: throws ConfigError "key: expected ..., found ..." unless ok.
void config_check(bool ok, const std::string& key, const std::string& expected,
                  const std::string& found);

template <class T>
T load_config(const std::string& path, const std::vector<std::string>& overrides = {}) {
  ConfigTree tree = ConfigTree::load(path, overrides);
  T config;
  ConfigReader(tree.root()).read(config);
  return config;
}

template <class T>
std::string to_yaml(const T& config) {
  return ConfigWriter().write(config);
}

}  // namespace vilau
