#pragma once
// The demo's synthetic world: pictures of one filled shape in a named colour, position (a 3x3
// grid) and size on a light grey background, or of two or three small ones for counting,
// with captions, questions and held-out (colour, shape, position) combinations for
// evaluation. Everything is procedural and deterministic from a seed, so the demo needs no
// downloads and a checker can read the pictures back from pixels alone.
#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace vilau::eval {

struct NamedColour {
  std::string name;
  std::array<int, 3> rgb;
};

struct NamedPosition {
  std::string name;
  double x, y;  // the shape's centre, as fractions of the width and the height
};

struct Combination {
  int colour = 0, shape = 0, position = 0;
  bool operator==(const Combination& o) const {
    return colour == o.colour && shape == o.shape && position == o.position;
  }
  bool operator<(const Combination& o) const {
    return std::tie(colour, shape, position) < std::tie(o.colour, o.shape, o.position);
  }
};

struct NamedSize {
  std::string name;
  double extent;  // the shape's bounding-box side, as a fraction of the width
};

// What world.json holds: the vocabulary of the pictures and which combinations are held out.
struct World {
  int image_size = 64;
  uint64_t seed = 0;
  double heldout_fraction = 0.2;
  std::vector<NamedColour> colours;
  std::vector<std::string> shapes;  // "square", "circle", "triangle" (triangles point up)
  std::vector<NamedPosition> positions;
  std::vector<NamedSize> sizes;
  // The side of each shape in a counting picture: small enough that shapes one position
  // apart do not touch.
  double group_extent = 0.2;
  std::vector<std::string> counts;  // number words; counts[n - 1] names n shapes
  // (colour, shape, position) indices that no training picture shows.
  std::vector<Combination> heldout;

  // The standard palette and vocabulary. Held out: the first round(fraction * colours *
  // shapes * positions) combinations k = 0, 1, ... with colour k mod colours, shape
  // (colour + k div colours) mod shapes and position k mod positions, at most one position
  // per (colour, shape) pair. So every pair, and every colour and shape at every position,
  // keeps training pictures: the model is asked to compose attributes it has seen, not to
  // draw a pair it never saw.
  static World standard(int image_size, uint64_t seed, double heldout_fraction);
  // Reads `dir`/world.json; IoError naming `dir` when it is not a folder.
  static World load(const std::string& dir);
  void save(const std::string& dir) const;

  bool is_heldout(int colour, int shape, int position) const;
  // The positions a training picture of (colour, shape) may use.
  std::vector<int> training_positions(int colour, int shape) const;
};

// One picture: `positions.size()` equal shapes (several only for counting questions).
struct Scene {
  int colour = 0;
  int shape = 0;
  int size = 0;
  std::vector<int> positions = {0};
  std::array<int, 3> background = {220, 220, 220};
};

// Renders without anti-aliasing: a pixel is the shape's colour when its centre is inside.
at::Tensor render_scene(const World& world, const Scene& scene);  // uint8 [S, S, 3]

// The optional attributes a caption names; colour and shape are always named. With every
// caption naming all four, a tiny model learns each whole caption as one unit; captions
// that lack the size or the position make those words carry their own meaning.
struct CaptionWords {
  bool size = true, position = true;
};

// "a large red circle on the left"; "two blue squares" for several shapes, whose size and
// position are never said.
std::string describe_scene(const World& world, const Scene& scene, CaptionWords words = {});

struct SyntheticWorldOptions {
  std::string out;
  int size = 64;
  int count = 1000;  // training pictures
  uint64_t seed = 0;
  double heldout_fraction = 0.2;
  std::string render_eval;  // when set, ground-truth pictures of eval_prompts as <id>.png
};

struct SyntheticWorldSummary {
  int train_images = 0;
  int train_captions = 0;
  int train_questions = 0;
  int eval_images = 0;
  int eval_questions = 0;
  int eval_prompts = 0;
};

// Writes images/, train_captions.jsonl, train_vqa.jsonl, eval_prompts.jsonl, eval_vqa.jsonl
// and world.json under `options.out` (docs/demo-world.md).
SyntheticWorldSummary write_synthetic_world(const SyntheticWorldOptions& options);

struct EvalPrompt {
  std::string id;
  std::string prompt;
  std::string colour;
  std::string shape;
  std::string position;  // empty when the prompt names none
};

struct EvalQuestion {
  std::string id;
  std::string image;
  std::string question;
  std::string answer;
  std::string kind;  // colour, shape, position or count
};

// What a prompt names, as the training conversations ask it: (kind, question, answer) for
// its colour, its shape and, when it names one, its position. The demo asks the model these
// about each picture it drew for the prompt and keeps the picture it agrees with most.
std::vector<std::array<std::string, 3>> prompt_questions(const EvalPrompt& prompt);

std::vector<EvalPrompt> read_eval_prompts(const std::string& path);
std::vector<EvalQuestion> read_eval_questions(const std::string& path);

}  // namespace vilau::eval
