// Typed reading and printing of config trees.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "config_node.h"
#include "vilau/core/error.h"

namespace vilau {

struct ConfigReader::Frame {
  const ConfigNode* node;
  std::string path;  // dotted path of this mapping, "" at the root
  std::vector<std::string> known;
};

namespace {

[[noreturn]] void wrong_type(const ConfigNode& node, const std::string& path,
                             const char* expected) {
  throw ConfigError(describe(node.where(), "key '" + path + "'", expected, node.describe_found()));
}

bool parse_bool(const ConfigNode& node, const std::string& path) {
  if (node.kind == ConfigNode::Kind::scalar && !node.quoted) {
    std::string lower = node.scalar;
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (lower == "true") {
      return true;
    }
    if (lower == "false") {
      return false;
    }
  }
  wrong_type(node, path, "a boolean (true or false)");
}

int64_t parse_int(const ConfigNode& node, const std::string& path) {
  if (node.kind == ConfigNode::Kind::scalar && !node.quoted) {
    const std::string& s = node.scalar;
    int64_t value = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
    if (ec == std::errc() && end == s.data() + s.size() && !s.empty()) {
      return value;
    }
  }
  wrong_type(node, path, "an integer");
}

double parse_double(const ConfigNode& node, const std::string& path) {
  if (node.kind == ConfigNode::Kind::scalar && !node.quoted && !node.scalar.empty()) {
    const char* begin = node.scalar.c_str();
    char* end = nullptr;
    const double value = std::strtod(begin, &end);
    if (end == begin + node.scalar.size() && std::isfinite(value)) {
      return value;
    }
  }
  wrong_type(node, path, "a finite number");
}

std::string parse_string(const ConfigNode& node, const std::string& path) {
  if (node.kind != ConfigNode::Kind::scalar) {
    wrong_type(node, path, "a string");
  }
  return node.scalar;
}

template <class T, class Parse>
void parse_list(const ConfigNode* node, const std::string& path, std::vector<T>& out, Parse parse) {
  if (node == nullptr) {
    return;
  }
  if (node->kind == ConfigNode::Kind::null) {
    out.clear();
    return;
  }
  if (node->kind != ConfigNode::Kind::sequence) {
    wrong_type(*node, path, "a list");
  }
  std::vector<T> values;
  for (size_t i = 0; i < node->items.size(); ++i) {
    values.push_back(parse(node->items[i], path + "[" + std::to_string(i) + "]"));
  }
  out = std::move(values);
}

// Shortest text that reads back as the same double, always recognisable as a float.
std::string format_double(double value) {
  char buf[40];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, value);
    if (std::strtod(buf, nullptr) == value) {
      break;
    }
  }
  std::string text = buf;
  if (text.find_first_of(".eEn") == std::string::npos) {
    text += ".0";
  }
  return text;
}

}  // namespace

ConfigReader::ConfigReader(const ConfigNode& root) { stack_.push_back({&root, "", {}}); }
ConfigReader::~ConfigReader() = default;

std::string ConfigReader::path_of(const char* key) const {
  const std::string& parent = stack_.back().path;
  return parent.empty() ? key : parent + "." + key;
}

const ConfigNode* ConfigReader::take(const char* key, Need need) {
  Frame& frame = stack_.back();
  frame.known.emplace_back(key);
  const ConfigNode* node = frame.node->find(key);
  const bool absent = node == nullptr || node->kind == ConfigNode::Kind::null;
  if (absent && need == Need::required) {
    throw ConfigError(describe(frame.node->where(), "missing required key '" + path_of(key) + "'"));
  }
  return node;
}

bool ConfigReader::enter(const char* key, Need need) {
  const ConfigNode* node = take(key, need);
  if (node == nullptr || node->kind == ConfigNode::Kind::null) {
    return false;
  }
  if (node->kind != ConfigNode::Kind::map) {
    wrong_type(*node, path_of(key), "a mapping");
  }
  stack_.push_back({node, path_of(key), {}});
  return true;
}

void ConfigReader::leave() {
  check_unknown_keys();
  stack_.pop_back();
}

void ConfigReader::check_unknown_keys() {
  const Frame& frame = stack_.back();
  for (const auto& [key, child] : frame.node->entries) {
    if (std::find(frame.known.begin(), frame.known.end(), key) != frame.known.end()) {
      continue;
    }
    std::string known;
    for (const std::string& k : frame.known) {
      known += (known.empty() ? "" : ", ") + k;
    }
    const std::string full = frame.path.empty() ? key : frame.path + "." + key;
    throw ConfigError(describe(child.where(), "unknown key '" + full + "'",
                               known.empty() ? "no keys here" : "one of: " + known));
  }
}

void ConfigReader::field(const char* key, bool& value, Need need) {
  const ConfigNode* node = take(key, need);
  if (node != nullptr && node->kind != ConfigNode::Kind::null) {
    value = parse_bool(*node, path_of(key));
  }
}

void ConfigReader::field(const char* key, int64_t& value, Need need) {
  const ConfigNode* node = take(key, need);
  if (node != nullptr && node->kind != ConfigNode::Kind::null) {
    value = parse_int(*node, path_of(key));
  }
}

void ConfigReader::field(const char* key, double& value, Need need) {
  const ConfigNode* node = take(key, need);
  if (node != nullptr && node->kind != ConfigNode::Kind::null) {
    value = parse_double(*node, path_of(key));
  }
}

void ConfigReader::field(const char* key, std::string& value, Need need) {
  const ConfigNode* node = take(key, need);
  if (node != nullptr && node->kind != ConfigNode::Kind::null) {
    value = parse_string(*node, path_of(key));
  }
}

void ConfigReader::field(const char* key, std::vector<int64_t>& value, Need need) {
  parse_list(take(key, need), path_of(key), value, parse_int);
}

void ConfigReader::field(const char* key, std::vector<double>& value, Need need) {
  parse_list(take(key, need), path_of(key), value, parse_double);
}

void ConfigReader::field(const char* key, std::vector<std::string>& value, Need need) {
  parse_list(take(key, need), path_of(key), value, parse_string);
}

void config_check(bool ok, const std::string& key, const std::string& expected,
                  const std::string& found) {
  if (!ok) {
    throw ConfigError(describe("key '" + key + "'", "invalid value", expected, found));
  }
}

struct ConfigWriter::Impl {
  YAML::Emitter out;
};

ConfigWriter::ConfigWriter() : impl_(std::make_unique<Impl>()) { impl_->out << YAML::BeginMap; }
ConfigWriter::~ConfigWriter() = default;

void ConfigWriter::begin_map(const char* key) {
  impl_->out << YAML::Key << key << YAML::Value << YAML::BeginMap;
}

void ConfigWriter::end_map() { impl_->out << YAML::EndMap; }

std::string ConfigWriter::finish() {
  impl_->out << YAML::EndMap;
  return std::string(impl_->out.c_str()) + "\n";
}

void ConfigWriter::field(const char* key, const bool& value, Need) {
  impl_->out << YAML::Key << key << YAML::Value << (value ? "true" : "false");
}

void ConfigWriter::field(const char* key, const int64_t& value, Need) {
  impl_->out << YAML::Key << key << YAML::Value << std::to_string(value);
}

void ConfigWriter::field(const char* key, const double& value, Need) {
  impl_->out << YAML::Key << key << YAML::Value << format_double(value);
}

void ConfigWriter::field(const char* key, const std::string& value, Need) {
  impl_->out << YAML::Key << key << YAML::Value << YAML::DoubleQuoted << value;
}

void ConfigWriter::field(const char* key, const std::vector<int64_t>& value, Need) {
  impl_->out << YAML::Key << key << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (int64_t v : value) {
    impl_->out << std::to_string(v);
  }
  impl_->out << YAML::EndSeq;
}

void ConfigWriter::field(const char* key, const std::vector<double>& value, Need) {
  impl_->out << YAML::Key << key << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (double v : value) {
    impl_->out << format_double(v);
  }
  impl_->out << YAML::EndSeq;
}

void ConfigWriter::field(const char* key, const std::vector<std::string>& value, Need) {
  impl_->out << YAML::Key << key << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (const std::string& v : value) {
    impl_->out << YAML::DoubleQuoted << v;
  }
  impl_->out << YAML::EndSeq;
}

}  // namespace vilau
