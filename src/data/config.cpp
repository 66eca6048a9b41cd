#include "vilau/data/config.h"

#include <algorithm>
#include <filesystem>
#include <map>

#include "vilau/core/error.h"

namespace vilau::data {

namespace {

std::string trim(const std::string& s) {
  const char* ws = " \t\n\r";
  const size_t begin = s.find_first_not_of(ws);
  return begin == std::string::npos ? "" : s.substr(begin, s.find_last_not_of(ws) - begin + 1);
}

[[noreturn]] void fail(const std::string& key, const std::string& expected,
                       const std::string& found) {
  throw ConfigError(describe(key, "invalid value", expected, found));
}

Task parse_task(const std::string& text, const std::string& key) {
  static const std::map<std::string, Task> tasks = {{"understanding", Task::understanding},
                                                    {"t2i", Task::t2i},
                                                    {"t2v", Task::t2v},
                                                    {"tower", Task::tower}};
  const auto it = tasks.find(text);
  if (it == tasks.end()) {
    fail(key, "one of understanding, t2i, t2v, tower", "'" + text + "'");
  }
  return it->second;
}

ResizeMode parse_resize(const std::string& text, const std::string& key) {
  static const std::map<std::string, ResizeMode> modes = {{"resize", ResizeMode::resize},
                                                          {"pad", ResizeMode::pad},
                                                          {"center_crop", ResizeMode::center_crop},
                                                          {"square_crop", ResizeMode::square_crop}};
  const auto it = modes.find(text);
  if (it == modes.end()) {
    fail(key, "one of resize, pad, center_crop, square_crop", "'" + text + "'");
  }
  return it->second;
}

double parse_number(const std::string& text, const std::string& key) {
  try {
    size_t used = 0;
    const double value = std::stod(text, &used);
    if (used == text.size()) {
      return value;
    }
  } catch (const std::exception&) {
  }
  fail(key, "a number", "'" + text + "'");
}

DatasetSpec parse_dataset(const std::string& text, const std::string& key,
                          const std::string& default_resize, const std::string& root) {
  std::map<std::string, std::string> values;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    const std::string pair = trim(text.substr(start, comma - start));
    start = comma + 1;
    if (pair.empty()) {
      continue;
    }
    const size_t eq = pair.find('=');
    const std::string name = trim(pair.substr(0, eq));
    static const char* known[] = {"path",   "format", "task", "weight",
                                  "frames", "resize", "flip", "uncond"};
    if (eq == std::string::npos ||
        std::find(std::begin(known), std::end(known), name) == std::end(known)) {
      fail(key,
           "key=value pairs with keys path, format, task, weight, frames, resize, flip, uncond",
           "'" + pair + "'");
    }
    values[name] = trim(pair.substr(eq + 1));
  }
  for (const char* needed : {"path", "format", "task"}) {
    if (values.count(needed) == 0 || values[needed].empty()) {
      fail(key, std::string("a '") + needed + "=...' entry", "'" + text + "'");
    }
  }
  DatasetSpec spec;
  spec.path = values["path"];
  if (!root.empty() && std::filesystem::path(spec.path).is_relative()) {
    spec.path = (std::filesystem::path(root) / spec.path).string();
  }
  spec.format = values["format"];
  if (spec.format != "captions" && spec.format != "llava" && spec.format != "webdataset") {
    fail(key + ".format", "captions, llava or webdataset", "'" + spec.format + "'");
  }
  spec.task = parse_task(values["task"], key + ".task");
  if (values.count("weight")) {
    spec.weight = parse_number(values["weight"], key + ".weight");
    if (!(spec.weight > 0)) {
      fail(key + ".weight", "a positive number", values["weight"]);
    }
  }
  if (values.count("frames")) {
    const double frames = parse_number(values["frames"], key + ".frames");
    spec.frames = static_cast<int64_t>(frames);
    if (frames < 1 || frames != static_cast<double>(spec.frames)) {
      fail(key + ".frames", "a positive whole number", values["frames"]);
    }
  }
  const std::string resize = values.count("resize") ? values["resize"] : default_resize;
  if (resize == "auto") {
    const bool generation = spec.task == Task::t2i || spec.task == Task::t2v;
    spec.resize = generation ? ResizeMode::square_crop : ResizeMode::resize;
  } else {
    spec.resize = parse_resize(resize, key + ".resize");
  }
  if (values.count("flip")) {
    if (values["flip"] != "true" && values["flip"] != "false") {
      fail(key + ".flip", "true or false", "'" + values["flip"] + "'");
    }
    spec.flip = values["flip"] == "true";
  }
  if (values.count("uncond")) {
    spec.uncond = parse_number(values["uncond"], key + ".uncond");
    if (!(spec.uncond >= 0 && spec.uncond <= 1)) {
      fail(key + ".uncond", "a fraction in [0, 1]", values["uncond"]);
    }
    if (spec.uncond > 0 && spec.task != Task::t2i && spec.task != Task::t2v) {
      fail(key + ".uncond", "uncond only with task=t2i or t2v", std::string(task_name(spec.task)));
    }
  }
  // A flipped image no longer matches captions that say "left" or "right", and generated
  // images must match their prompt, so only the tower's reconstruction data may flip.
  if (spec.flip && spec.task != Task::tower) {
    fail(key + ".flip", "flip=true only with task=tower", std::string(task_name(spec.task)));
  }
  return spec;
}

}  // namespace

const char* task_name(Task task) {
  switch (task) {
    case Task::understanding:
      return "understanding";
    case Task::t2i:
      return "t2i";
    case Task::t2v:
      return "t2v";
    case Task::tower:
      return "tower";
  }
  return "?";
}

const char* resize_mode_name(ResizeMode mode) {
  switch (mode) {
    case ResizeMode::resize:
      return "resize";
    case ResizeMode::pad:
      return "pad";
    case ResizeMode::center_crop:
      return "center_crop";
    case ResizeMode::square_crop:
      return "square_crop";
  }
  return "?";
}

std::vector<DatasetSpec> DataConfig::mixture(const std::string& path) const {
  if (resize_mode != "auto") {
    parse_resize(resize_mode, path + ".resize_mode");
  }
  std::vector<DatasetSpec> specs;
  for (size_t i = 0; i < datasets.size(); ++i) {
    specs.push_back(parse_dataset(datasets[i], path + ".datasets[" + std::to_string(i) + "]",
                                  resize_mode, root));
  }
  return specs;
}

void DataConfig::validate(const std::string& path) const {
  config_check(!datasets.empty(), path + ".datasets", "at least one dataset", "an empty list");
  mixture(path);
  config_check(image_size > 0, path + ".image_size", "a positive size", std::to_string(image_size));
  config_check(tokens_per_image > 0, path + ".tokens_per_image", "a positive count",
               std::to_string(tokens_per_image));
  config_check(max_length >= 0, path + ".max_length", "0 (no limit) or a positive length",
               std::to_string(max_length));
  config_check(!packing || max_length > 0, path + ".max_length",
               "a positive row length when packing is on", std::to_string(max_length));
  config_check(batch_size > 0, path + ".batch_size", "a positive size", std::to_string(batch_size));
  config_check(num_workers >= 0, path + ".num_workers", "0 or more threads",
               std::to_string(num_workers));
  config_check(prefetch > 0, path + ".prefetch", "a positive number of batches",
               std::to_string(prefetch));
  config_check(max_bad_fraction >= 0 && max_bad_fraction <= 1, path + ".max_bad_fraction",
               "a fraction in [0, 1]", std::to_string(max_bad_fraction));
  config_check(bad_check_after > 0, path + ".bad_check_after", "a positive number of samples",
               std::to_string(bad_check_after));
}

}  // namespace vilau::data
