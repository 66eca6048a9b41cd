#include "vilau/eval/synthetic_world.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include "vilau/core/error.h"
#include "vilau/eval/jsonl.h"
#include "vilau/io/atomic_file.h"
#include "vilau/io/image.h"
#include "vilau/io/json_file.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace vilau::eval {
namespace {

constexpr const char* kHeldoutRule =
    "the first round(heldout_fraction * colours * shapes * positions) of (colour k mod colours, "
    "shape (colour + k div colours) mod shapes, position k mod positions) for k = 0, 1, ..., at "
    "most colours * shapes";

// mt19937_64 is specified bit for bit, unlike the standard distributions, so the files are
// the same on every standard library.
int pick(std::mt19937_64& rng, int n) { return static_cast<int>(rng() % static_cast<uint64_t>(n)); }

// One shape at a random one of `positions`, or (several) two or more among them;
// `required`, when set, is always among the positions.
Scene random_scene(const World& world, int colour, int shape, std::vector<int> positions,
                   bool several, int required, std::mt19937_64& rng) {
  Scene scene;
  scene.colour = colour;
  scene.shape = shape;
  scene.size = pick(rng, static_cast<int>(world.sizes.size()));
  scene.positions = {positions[pick(rng, static_cast<int>(positions.size()))]};
  if (required >= 0) {
    scene.positions = {required};
  }
  const int max_count = static_cast<int>(std::min(world.counts.size(), positions.size()));
  if (several && max_count >= 2) {
    const int count = 2 + pick(rng, max_count - 1);
    for (size_t i = positions.size() - 1; i > 0; --i) {
      std::swap(positions[i], positions[pick(rng, static_cast<int>(i) + 1)]);
    }
    if (required >= 0) {
      std::swap(*std::find(positions.begin(), positions.end(), required), positions[0]);
    }
    positions.resize(count);
    std::sort(positions.begin(), positions.end());
    scene.positions = positions;
  }
  // Light greys with a faint tint: varied, yet far from every palette colour.
  const int grey = 195 + pick(rng, 41);
  for (int& channel : scene.background) {
    channel = grey + pick(rng, 13) - 6;
  }
  return scene;
}

std::string position_phrase(const std::string& position) {
  if (position == "center") {
    return "in the center";
  }
  return (position == "left" || position == "right" ? "on the " : "at the ") + position;
}

// One conversation asks all of a picture's questions: the system prompt and the picture are
// then paid for once instead of once per question (a third of the tokens).
json llava_conversation(const std::string& image,
                        const std::vector<std::array<std::string, 3>>& questions) {
  json turns = json::array();
  for (const auto& [kind, question, answer] : questions) {
    turns.push_back(
        {{"from", "human"}, {"value", turns.empty() ? "<image>\n" + question : question}});
    turns.push_back({{"from", "gpt"}, {"value", answer}});
  }
  return {{"image", image}, {"conversations", turns}};
}

constexpr const char* kColourQuestion = "What colour is the shape?";
constexpr const char* kShapeQuestion = "What shape is it?";
constexpr const char* kPositionQuestion = "Where is the shape?";

// (kind, question, answer) for a scene. Shape and position only for a single shape: the
// shapes of a counting picture are too small to tell a circle from a square reliably.
std::vector<std::array<std::string, 3>> questions_for(const World& world, const Scene& scene) {
  if (scene.positions.size() > 1) {
    return {{"colour", "What colour are the shapes?", world.colours[scene.colour].name},
            {"count", "How many shapes are there?", world.counts[scene.positions.size() - 1]}};
  }
  return {{"colour", kColourQuestion, world.colours[scene.colour].name},
          {"shape", kShapeQuestion, world.shapes[scene.shape]},
          {"position", kPositionQuestion, world.positions[scene.positions[0]].name},
          {"count", "How many shapes are there?", world.counts[0]}};
}

std::string numbered(const char* format, int i) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), format, i);
  return buffer;
}

void validate(const SyntheticWorldOptions& options) {
  if (options.out.empty()) {
    throw ConfigError(describe("--out", "output folder", "a path", "nothing"));
  }
  if (options.size < 32 || options.size > 1024) {
    throw ConfigError(
        describe("--size", "image size", "32 to 1024 pixels", std::to_string(options.size)));
  }
  if (options.count < 1) {
    throw ConfigError(
        describe("--count", "training images", "at least 1", std::to_string(options.count)));
  }
  if (!(options.heldout_fraction > 0.0 && options.heldout_fraction < 1.0)) {
    throw ConfigError(describe("--heldout-fraction", "held-out share of combinations",
                               "a number in (0, 1)", std::to_string(options.heldout_fraction)));
  }
}

}  // namespace

World World::standard(int image_size, uint64_t seed, double heldout_fraction) {
  World world;
  world.image_size = image_size;
  world.seed = seed;
  world.heldout_fraction = heldout_fraction;
  world.colours = {{"red", {220, 40, 40}},
                   {"green", {40, 170, 60}},
                   {"blue", {40, 80, 220}},
                   {"yellow", {230, 200, 40}},
                   {"purple", {150, 60, 190}}};
  world.shapes = {"square", "circle", "triangle"};
  world.positions = {
      {"top left", 0.25, 0.25},    {"top", 0.5, 0.25},    {"top right", 0.75, 0.25},
      {"left", 0.25, 0.5},         {"center", 0.5, 0.5},  {"right", 0.75, 0.5},
      {"bottom left", 0.25, 0.75}, {"bottom", 0.5, 0.75}, {"bottom right", 0.75, 0.75}};
  world.sizes = {{"small", 0.3}, {"large", 0.45}};
  world.group_extent = 0.2;
  world.counts = {"one", "two", "three"};
  const int colours = static_cast<int>(world.colours.size());
  const int shapes = static_cast<int>(world.shapes.size());
  const int positions = static_cast<int>(world.positions.size());
  const int wanted = static_cast<int>(std::lround(heldout_fraction * colours * shapes * positions));
  const int n = std::clamp(wanted, 1, colours * shapes);
  for (int k = 0; k < n; ++k) {
    const int c = k % colours;
    world.heldout.push_back({c, (c + k / colours) % shapes, k % positions});
  }
  return world;
}

bool World::is_heldout(int colour, int shape, int position) const {
  return std::find(heldout.begin(), heldout.end(), Combination{colour, shape, position}) !=
         heldout.end();
}

std::vector<int> World::training_positions(int colour, int shape) const {
  std::vector<int> out;
  for (int p = 0; p < static_cast<int>(positions.size()); ++p) {
    if (!is_heldout(colour, shape, p)) {
      out.push_back(p);
    }
  }
  return out;
}

void World::save(const std::string& dir) const {
  json j;
  j["image_size"] = image_size;
  j["seed"] = seed;
  j["heldout_fraction"] = heldout_fraction;
  for (const NamedColour& c : colours) {
    j["colours"].push_back({{"name", c.name}, {"rgb", c.rgb}});
  }
  j["shapes"] = shapes;
  for (const NamedPosition& p : positions) {
    j["positions"].push_back({{"name", p.name}, {"x", p.x}, {"y", p.y}});
  }
  for (const NamedSize& s : sizes) {
    j["sizes"].push_back({{"name", s.name}, {"extent", s.extent}});
  }
  j["group_extent"] = group_extent;
  j["counts"] = counts;
  j["heldout"]["rule"] = kHeldoutRule;
  j["heldout"]["combinations"] = json::array();
  for (const Combination& h : heldout) {
    j["heldout"]["combinations"].push_back({{"colour", colours[h.colour].name},
                                            {"shape", shapes[h.shape]},
                                            {"position", positions[h.position].name}});
  }
  io::write_file_atomic((fs::path(dir) / "world.json").string(), j.dump(2) + "\n");
}

World World::load(const std::string& dir) {
  if (!fs::is_directory(dir)) {
    throw IoError(describe(dir, "synthetic world folder", "a folder written by `vilau data synth`",
                           "no such folder"));
  }
  const std::string path = (fs::path(dir) / "world.json").string();
  const json j = io::read_json_file(path, "a synthetic world description");
  World world;
  try {
    world.image_size = j.at("image_size").get<int>();
    world.seed = j.at("seed").get<uint64_t>();
    world.heldout_fraction = j.at("heldout_fraction").get<double>();
    for (const json& c : j.at("colours")) {
      world.colours.push_back(
          {c.at("name").get<std::string>(), c.at("rgb").get<std::array<int, 3>>()});
    }
    world.shapes = j.at("shapes").get<std::vector<std::string>>();
    for (const json& p : j.at("positions")) {
      world.positions.push_back(
          {p.at("name").get<std::string>(), p.at("x").get<double>(), p.at("y").get<double>()});
    }
    for (const json& s : j.at("sizes")) {
      world.sizes.push_back({s.at("name").get<std::string>(), s.at("extent").get<double>()});
    }
    world.group_extent = j.at("group_extent").get<double>();
    world.counts = j.at("counts").get<std::vector<std::string>>();
    std::vector<std::string> colour_names, position_names;
    for (const NamedColour& c : world.colours) {
      colour_names.push_back(c.name);
    }
    for (const NamedPosition& p : world.positions) {
      position_names.push_back(p.name);
    }
    const auto index = [&path](const std::vector<std::string>& names, const std::string& name) {
      const auto it = std::find(names.begin(), names.end(), name);
      if (it == names.end()) {
        throw FormatError(describe(path, "held-out combination",
                                   "a colour, shape and position of the world", "'" + name + "'"));
      }
      return static_cast<int>(it - names.begin());
    };
    for (const json& h : j.at("heldout").at("combinations")) {
      world.heldout.push_back({index(colour_names, h.at("colour").get<std::string>()),
                               index(world.shapes, h.at("shape").get<std::string>()),
                               index(position_names, h.at("position").get<std::string>())});
    }
  } catch (const json::exception& e) {
    throw FormatError(
        describe(path, "synthetic world description", "the keys of world.json", e.what()));
  }
  if (world.colours.empty() || world.shapes.empty() || world.positions.empty() ||
      world.sizes.empty() || world.counts.empty()) {
    throw FormatError(describe(path, "synthetic world description",
                               "non-empty colours, shapes, positions, sizes and counts",
                               "an empty list"));
  }
  return world;
}

at::Tensor render_scene(const World& world, const Scene& scene) {
  const int n = world.image_size;
  at::Tensor image = torch::empty({n, n, 3}, torch::kUInt8);
  uint8_t* pixels = image.data_ptr<uint8_t>();
  for (int i = 0; i < n * n; ++i) {
    for (int c = 0; c < 3; ++c) {
      pixels[3 * i + c] = static_cast<uint8_t>(scene.background[c]);
    }
  }
  const double extent =
      scene.positions.size() > 1 ? world.group_extent : world.sizes[scene.size].extent;
  const double h = extent * n / 2;
  const bool circle = world.shapes[scene.shape] == "circle";
  const bool triangle = world.shapes[scene.shape] == "triangle";
  for (int position : scene.positions) {
    const double cx = world.positions[position].x * n, cy = world.positions[position].y * n;
    for (int y = 0; y < n; ++y) {
      for (int x = 0; x < n; ++x) {
        const double dx = x + 0.5 - cx, dy = y + 0.5 - cy;
        bool inside = std::abs(dx) <= h && std::abs(dy) <= h;
        if (circle) {
          inside = dx * dx + dy * dy <= h * h;
        } else if (triangle) {
          // Apex at the top; the width grows linearly to 2h at the base.
          inside = inside && std::abs(dx) <= (dy + h) / 2;
        }
        if (inside) {
          for (int c = 0; c < 3; ++c) {
            pixels[3 * (y * n + x) + c] = static_cast<uint8_t>(world.colours[scene.colour].rgb[c]);
          }
        }
      }
    }
  }
  return image;
}

std::string describe_scene(const World& world, const Scene& scene, CaptionWords words) {
  const bool several = scene.positions.size() > 1;
  std::string out = several ? world.counts[scene.positions.size() - 1] : "a";
  if (words.size && !several) {
    out += " " + world.sizes[scene.size].name;
  }
  out += " " + world.colours[scene.colour].name + " " + world.shapes[scene.shape];
  if (several) {
    return out + "s";
  }
  if (words.position) {
    out += " " + position_phrase(world.positions[scene.positions[0]].name);
  }
  return out;
}

SyntheticWorldSummary write_synthetic_world(const SyntheticWorldOptions& options) {
  validate(options);
  const World world = World::standard(options.size, options.seed, options.heldout_fraction);
  const fs::path out(options.out);
  fs::create_directories(out / "images");
  std::mt19937_64 rng(options.seed);
  SyntheticWorldSummary summary;
  // Every fourth picture shows several shapes, for the counting questions only: pictures
  // that are generation targets keep a single shape.
  std::vector<json> captions, train_vqa;
  for (int i = 0; i < options.count; ++i) {
    const bool several = i % 4 == 3;
    const int colour = pick(rng, static_cast<int>(world.colours.size()));
    const int shape = pick(rng, static_cast<int>(world.shapes.size()));
    const Scene scene = random_scene(world, colour, shape, world.training_positions(colour, shape),
                                     several, -1, rng);
    const std::string image = numbered("images/train_%05d.png", i);
    io::write_image((out / image).string(), render_scene(world, scene));
    // Half the captions name everything, as the eval prompts do; each of the others lacks
    // the size or the position. Never the colour or the shape: "a red shape at the top
    // left" teaches which shapes red takes there, and that is never the held-out one;
    // "a small square at the top left" does the same for colours (docs/demo-world.md).
    CaptionWords words;
    const std::array<bool*, 2> flags = {&words.size, &words.position};
    if (pick(rng, 2) != 0) {
      *flags[pick(rng, 2)] = false;
    }
    if (!several) {
      captions.push_back({{"image", image}, {"caption", describe_scene(world, scene, words)}});
    }
    // A random order, so that every kind is also asked first, as the evaluation asks it.
    std::vector<std::array<std::string, 3>> questions = questions_for(world, scene);
    for (size_t k = questions.size() - 1; k > 0; --k) {
      std::swap(questions[k], questions[pick(rng, static_cast<int>(k) + 1)]);
    }
    summary.train_questions += static_cast<int>(questions.size());
    train_vqa.push_back(llava_conversation(image, questions));
  }
  write_jsonl((out / "train_captions.jsonl").string(), captions);
  write_jsonl((out / "train_vqa.jsonl").string(), train_vqa);
  summary.train_images = options.count;
  summary.train_captions = static_cast<int>(captions.size());

  const int heldout = static_cast<int>(world.heldout.size());
  std::vector<int> all_positions(world.positions.size());
  std::iota(all_positions.begin(), all_positions.end(), 0);
  const int eval_images = std::max(4 * heldout, options.count / 4);
  std::vector<json> eval_vqa;
  for (int i = 0; i < eval_images; ++i) {
    const Combination& h = world.heldout[i % heldout];
    const Scene scene =
        random_scene(world, h.colour, h.shape, all_positions, i % 4 == 3, h.position, rng);
    const std::string image = numbered("images/eval_%05d.png", i);
    io::write_image((out / image).string(), render_scene(world, scene));
    for (const auto& [kind, question, answer] : questions_for(world, scene)) {
      eval_vqa.push_back({{"id", numbered("q%05d", static_cast<int>(eval_vqa.size()))},
                          {"image", image},
                          {"question", question},
                          {"answer", answer},
                          {"kind", kind}});
    }
  }
  write_jsonl((out / "eval_vqa.jsonl").string(), eval_vqa);
  summary.eval_images = eval_images;
  summary.eval_questions = static_cast<int>(eval_vqa.size());

  // Every held-out combination in every size and once without a size, in words seen in
  // training.
  std::vector<json> prompts;
  if (!options.render_eval.empty()) {
    fs::create_directories(options.render_eval);
  }
  const int sizes = static_cast<int>(world.sizes.size());
  for (const Combination& h : world.heldout) {
    for (int size = 0; size <= sizes; ++size) {
      Scene scene = random_scene(world, h.colour, h.shape, all_positions, false, h.position, rng);
      CaptionWords words;
      if (size < sizes) {
        scene.size = size;
      } else {
        words.size = false;
      }
      const std::string id = numbered("p%03d", static_cast<int>(prompts.size()));
      prompts.push_back({{"id", id},
                         {"prompt", describe_scene(world, scene, words)},
                         {"colour", world.colours[h.colour].name},
                         {"shape", world.shapes[h.shape]},
                         {"position", world.positions[h.position].name}});
      if (!options.render_eval.empty()) {
        io::write_image((fs::path(options.render_eval) / (id + ".png")).string(),
                        render_scene(world, scene));
      }
    }
  }
  write_jsonl((out / "eval_prompts.jsonl").string(), prompts);
  summary.eval_prompts = static_cast<int>(prompts.size());
  world.save(out.string());
  return summary;
}

std::vector<std::array<std::string, 3>> prompt_questions(const EvalPrompt& prompt) {
  std::vector<std::array<std::string, 3>> out = {{"colour", kColourQuestion, prompt.colour},
                                                 {"shape", kShapeQuestion, prompt.shape}};
  if (!prompt.position.empty()) {
    out.push_back({"position", kPositionQuestion, prompt.position});
  }
  return out;
}

std::vector<EvalPrompt> read_eval_prompts(const std::string& path) {
  const std::vector<json> rows = read_jsonl(path, "text-to-image eval prompts");
  std::vector<EvalPrompt> prompts;
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::string where = path + ":" + std::to_string(i + 1);
    EvalPrompt p{jsonl_string(rows[i], "id", where), jsonl_string(rows[i], "prompt", where),
                 jsonl_string(rows[i], "colour", where), jsonl_string(rows[i], "shape", where), ""};
    if (rows[i].contains("position")) {
      p.position = jsonl_string(rows[i], "position", where);
    }
    prompts.push_back(std::move(p));
  }
  return prompts;
}

std::vector<EvalQuestion> read_eval_questions(const std::string& path) {
  const std::vector<json> rows = read_jsonl(path, "eval questions");
  std::vector<EvalQuestion> questions;
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::string where = path + ":" + std::to_string(i + 1);
    questions.push_back({jsonl_string(rows[i], "id", where), jsonl_string(rows[i], "image", where),
                         jsonl_string(rows[i], "question", where),
                         jsonl_string(rows[i], "answer", where),
                         jsonl_string(rows[i], "kind", where)});
  }
  return questions;
}

}  // namespace vilau::eval
