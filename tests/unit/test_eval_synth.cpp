// The demo's synthetic world and its deterministic checker (docs/demo-world.md).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "test_util.h"
#include "vilau/core/error.h"
#include "vilau/data/config.h"
#include "vilau/data/manifest.h"
#include "vilau/eval/jsonl.h"
#include "vilau/eval/shape_checker.h"
#include "vilau/eval/synthetic_world.h"
#include "vilau/io/image.h"

namespace vilau::eval {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using vilau::testing::TempDirTest;

std::string file_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Relative path -> contents of every file under `dir`.
std::map<std::string, std::string> tree(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) {
      out[fs::relative(entry.path(), dir).string()] = file_bytes(entry.path());
    }
  }
  return out;
}

SyntheticWorldOptions options_for(const std::string& out, int count, uint64_t seed) {
  SyntheticWorldOptions options;
  options.out = out;
  options.count = count;
  options.seed = seed;
  return options;
}

int index_of(const std::vector<std::string>& names, const std::string& name) {
  const auto it = std::find(names.begin(), names.end(), name);
  return it == names.end() ? -1 : static_cast<int>(it - names.begin());
}

int colour_index(const World& world, const std::string& name) {
  for (size_t i = 0; i < world.colours.size(); ++i) {
    if (world.colours[i].name == name) {
      return static_cast<int>(i);
    }
  }
  return -1;
}

// Every colour, shape, position and size on three backgrounds.
std::vector<Scene> all_scenes(const World& world) {
  const std::array<int, 3> backgrounds[] = {{196, 201, 190}, {220, 220, 220}, {240, 234, 241}};
  std::vector<Scene> scenes;
  for (int c = 0; c < static_cast<int>(world.colours.size()); ++c) {
    for (int s = 0; s < static_cast<int>(world.shapes.size()); ++s) {
      for (int p = 0; p < static_cast<int>(world.positions.size()); ++p) {
        for (int z = 0; z < static_cast<int>(world.sizes.size()); ++z) {
          for (int b = 0; b < 3; ++b) {
            Scene scene;
            scene.colour = c;
            scene.shape = s;
            scene.positions = {p};
            scene.size = z;
            scene.background = backgrounds[b];
            scenes.push_back(scene);
          }
        }
      }
    }
  }
  return scenes;
}

struct Accuracy {
  double colour = 0, shape = 0, position = 0;
};

// `distort` maps the pictures, stacked into [N, H, W, 3], in one call.
template <class Distort>
Accuracy checker_accuracy(const World& world, Distort distort) {
  const std::vector<Scene> scenes = all_scenes(world);
  std::vector<at::Tensor> pictures;
  for (const Scene& scene : scenes) {
    pictures.push_back(render_scene(world, scene));
  }
  const at::Tensor distorted = distort(torch::stack(pictures));
  Accuracy a;
  for (size_t i = 0; i < scenes.size(); ++i) {
    const Scene& scene = scenes[i];
    const ShapeReading r = read_shape(distorted[static_cast<int64_t>(i)], world);
    a.colour += r.found && r.colour == world.colours[scene.colour].name;
    a.shape += r.found && r.shape == world.shapes[scene.shape];
    a.position += r.found && r.position == world.positions[scene.positions[0]].name;
  }
  a.colour /= scenes.size();
  a.shape /= scenes.size();
  a.position /= scenes.size();
  return a;
}

using SynthWorldTest = TempDirTest;

TEST_F(SynthWorldTest, SameSeedSameBytesOtherSeedOtherBytes) {
  write_synthetic_world(options_for(path("a"), 24, 7));
  write_synthetic_world(options_for(path("b"), 24, 7));
  write_synthetic_world(options_for(path("c"), 24, 8));
  const auto a = tree(path("a"));
  EXPECT_EQ(a.size(), 24u + 60 + 5);  // training and 4 eval pictures per held-out, 5 files
  EXPECT_EQ(a, tree(path("b")));
  const auto c = tree(path("c"));
  EXPECT_NE(a.at("train_captions.jsonl"), c.at("train_captions.jsonl"));
  EXPECT_NE(a.at("images/train_00000.png"), c.at("images/train_00000.png"));
}

TEST_F(SynthWorldTest, HeldOutCombinationsOnlyInEvalFiles) {
  // Enough pictures that every one of the 120 training combinations is drawn.
  const SyntheticWorldSummary summary = write_synthetic_world(options_for(path("w"), 1200, 1));
  const World world = World::load(path("w"));
  // round(0.2 * 5 colours * 3 shapes * 9 positions) = 27, capped at one per (colour, shape)
  ASSERT_EQ(world.heldout.size(), 15u);
  EXPECT_EQ(world.seed, 1u);
  EXPECT_EQ(world.heldout, World::standard(64, 1, 0.2).heldout);
  EXPECT_EQ(world.colours[3].rgb, (std::array<int, 3>{230, 200, 40}));
  std::set<std::pair<int, int>> heldout_pairs;
  for (const Combination& h : world.heldout) {
    EXPECT_TRUE(heldout_pairs.emplace(h.colour, h.shape).second) << "one position per pair";
  }
  const fs::path root = path("w");
  const auto position_index = [&world](const std::string& name) {
    for (size_t i = 0; i < world.positions.size(); ++i) {
      if (world.positions[i].name == name) {
        return static_cast<int>(i);
      }
    }
    return -1;
  };
  // Position names have one or two words ("left", "top left"): the longest that ends the
  // caption is the one it names.
  const auto caption_position = [&world](const std::string& caption) {
    int found = -1;
    size_t longest = 0;
    for (size_t i = 0; i < world.positions.size(); ++i) {
      const std::string tail = " " + world.positions[i].name;
      if (caption.size() >= tail.size() && tail.size() > longest &&
          caption.compare(caption.size() - tail.size(), tail.size(), tail) == 0) {
        found = static_cast<int>(i);
        longest = tail.size();
      }
    }
    return found;
  };

  // Captions name all four attributes (size, colour, shape, position) or all but the size
  // or the position.
  std::set<Combination> train_combos;
  const auto captions = read_jsonl((root / "train_captions.jsonl").string(), "captions");
  EXPECT_EQ(static_cast<int>(captions.size()), summary.train_captions);
  int full = 0;
  for (const auto& row : captions) {
    ASSERT_TRUE(fs::is_regular_file(root / row.at("image").get<std::string>()));
    const std::string caption = row.at("caption").get<std::string>();
    std::istringstream words(caption);
    Combination c{-1, -1, caption_position(caption)};
    bool size = false;
    for (std::string word; words >> word;) {
      c.colour = std::max(c.colour, colour_index(world, word));
      c.shape = std::max(c.shape, index_of(world.shapes, word));
      size = size || word == world.sizes[0].name || word == world.sizes[1].name;
    }
    const int named = (c.colour >= 0) + (c.shape >= 0) + (c.position >= 0) + size;
    EXPECT_GE(named, 3) << row.dump();
    EXPECT_TRUE(c.colour >= 0 && c.shape >= 0) << "colour or shape left out: " << row.dump();
    full += named == 4;
    if (c.colour >= 0 && c.shape >= 0 && c.position >= 0) {
      train_combos.insert(c);
    }
  }
  EXPECT_GT(full, summary.train_captions / 3);
  EXPECT_LT(full, 2 * summary.train_captions / 3);
  std::map<std::string, Combination> vqa_combos;
  std::map<std::string, std::string> counts;
  const auto vqa = read_jsonl((root / "train_vqa.jsonl").string(), "vqa");
  // One conversation per picture, the picture in its first question only.
  EXPECT_EQ(static_cast<int>(vqa.size()), summary.train_images);
  int questions = 0;
  std::set<std::string> first_kinds;
  for (const auto& row : vqa) {
    const std::string image = row.at("image").get<std::string>();
    ASSERT_TRUE(fs::is_regular_file(root / image));
    const auto& turns = row.at("conversations");
    // Four questions for one shape; colour and count for a counting picture.
    ASSERT_TRUE(turns.size() == 4u || turns.size() == 8u) << row.dump();
    first_kinds.insert(turns[0].at("value").get<std::string>());
    Combination& c = vqa_combos.try_emplace(image, Combination{-1, -1, -1}).first->second;
    for (size_t t = 0; t < turns.size(); t += 2, ++questions) {
      EXPECT_EQ(turns[t].at("from"), "human");
      const std::string question = turns[t].at("value").get<std::string>();
      EXPECT_EQ(question.rfind("<image>\n", 0) == 0, t == 0) << row.dump();
      EXPECT_EQ(turns[t + 1].at("from"), "gpt");
      const std::string answer = turns[t + 1].at("value").get<std::string>();
      if (question.find("colour") != std::string::npos) {
        c.colour = colour_index(world, answer);
      } else if (question.find("shape are") != std::string::npos ||
                 question.find("shape is") != std::string::npos) {
        c.shape = index_of(world.shapes, answer);
      } else if (question.find("Where") != std::string::npos) {
        c.position = position_index(answer);
      } else {
        counts[image] = answer;
      }
    }
  }
  EXPECT_EQ(questions, summary.train_questions);
  EXPECT_GT(first_kinds.size(), 3u) << "the questions' order never changes";
  EXPECT_EQ(static_cast<int>(vqa_combos.size()), summary.train_images);
  std::set<std::pair<int, int>> train_pairs;
  int several = 0;
  for (const auto& [image, c] : vqa_combos) {
    ASSERT_GE(c.colour, 0) << image;
    EXPECT_EQ(c.shape >= 0, c.position >= 0) << image;
    if (c.position >= 0) {
      train_pairs.emplace(c.colour, c.shape);
      train_combos.insert(c);
      EXPECT_EQ(counts.at(image), "one");
    } else {
      ++several;
      EXPECT_TRUE(counts.at(image) == "two" || counts.at(image) == "three") << image;
    }
  }
  EXPECT_EQ(several, 300);  // every fourth picture
  for (const Combination& c : train_combos) {
    EXPECT_FALSE(world.is_heldout(c.colour, c.shape, c.position))
        << c.colour << " " << c.shape << " " << c.position;
  }
  EXPECT_EQ(train_pairs.size(), 15u);    // every (colour, shape) pair is trained on
  EXPECT_EQ(train_combos.size(), 120u);  // and every other single-shape combination

  std::set<Combination> eval_combos;
  std::map<std::string, Combination> eval_images;
  std::set<std::string> kinds;
  for (const EvalQuestion& q : read_eval_questions((root / "eval_vqa.jsonl").string())) {
    ASSERT_TRUE(fs::is_regular_file(root / q.image));
    kinds.insert(q.kind);
    Combination& c = eval_images.try_emplace(q.image, Combination{-1, -1, -1}).first->second;
    if (q.kind == "colour") {
      c.colour = colour_index(world, q.answer);
    } else if (q.kind == "shape") {
      c.shape = index_of(world.shapes, q.answer);
    } else if (q.kind == "position") {
      c.position = position_index(q.answer);
    }
  }
  EXPECT_EQ(kinds, (std::set<std::string>{"colour", "count", "position", "shape"}));
  for (const auto& [image, c] : eval_images) {
    if (c.position >= 0) {
      EXPECT_TRUE(heldout_pairs.count({c.colour, c.shape})) << image;
      EXPECT_TRUE(world.is_heldout(c.colour, c.shape, c.position)) << image;
      eval_combos.insert(c);
    }
  }
  const std::set<Combination> heldout(world.heldout.begin(), world.heldout.end());
  EXPECT_EQ(eval_combos, heldout);
  std::set<Combination> prompt_combos;
  for (const EvalPrompt& p : read_eval_prompts((root / "eval_prompts.jsonl").string())) {
    prompt_combos.insert({colour_index(world, p.colour), index_of(world.shapes, p.shape),
                          position_index(p.position)});
    EXPECT_THAT(p.prompt, HasSubstr(p.colour + " " + p.shape));
  }
  EXPECT_EQ(prompt_combos, heldout);
}

// The trainer's own reader takes the training files as they are.
TEST_F(SynthWorldTest, TrainingFilesReadAsDatasets) {
  const SyntheticWorldSummary summary = write_synthetic_world(options_for(path("w"), 12, 0));
  data::DatasetSpec captions{path("w/train_captions.jsonl"), "captions", data::Task::t2i};
  const data::Manifest t2i = data::read_dataset(captions);
  EXPECT_EQ(static_cast<int>(t2i.samples.size()), summary.train_captions);
  EXPECT_TRUE(t2i.bad.empty());
  data::DatasetSpec vqa{path("w/train_vqa.jsonl"), "llava", data::Task::understanding};
  const data::Manifest understanding = data::read_dataset(vqa);
  EXPECT_EQ(static_cast<int>(understanding.samples.size()), summary.train_images);
  EXPECT_TRUE(understanding.bad.empty());
  ASSERT_FALSE(understanding.samples.empty());
  EXPECT_TRUE(fs::is_regular_file(understanding.samples[0].images.at(0)));
}

TEST_F(SynthWorldTest, CheckerIsExactOnRenderedPictures) {
  const World world = World::standard(64, 0, 0.2);
  const Accuracy a = checker_accuracy(world, [](const at::Tensor& image) { return image; });
  EXPECT_EQ(a.colour, 1.0);
  EXPECT_EQ(a.shape, 1.0);
  EXPECT_EQ(a.position, 1.0);
}

TEST_F(SynthWorldTest, DescribesScenes) {
  const World world = World::standard(64, 0, 0.2);
  Scene scene;
  scene.colour = 2;
  scene.shape = 0;
  scene.size = 1;
  scene.positions = {4};
  EXPECT_EQ(describe_scene(world, scene), "a large blue square in the center");
  scene.positions = {0};
  EXPECT_EQ(describe_scene(world, scene), "a large blue square at the top left");
  scene.positions = {7};
  EXPECT_EQ(describe_scene(world, scene), "a large blue square at the bottom");
  scene.size = 0;
  scene.positions = {3, 5};
  EXPECT_EQ(describe_scene(world, scene), "two blue squares");
  scene.positions = {5};
  EXPECT_EQ(describe_scene(world, scene, {false, true}), "a blue square on the right");
  EXPECT_EQ(describe_scene(world, scene, {true, false}), "a small blue square");
  EXPECT_EQ(describe_scene(world, scene, {false, false}), "a blue square");
}

TEST_F(SynthWorldTest, CheckerToleratesNoiseAndBlur) {
  const World world = World::standard(64, 0, 0.2);
  torch::manual_seed(0);
  const auto distort = [](const at::Tensor& images) {
    const at::Tensor x = images.permute({0, 3, 1, 2}).to(torch::kFloat);
    const at::Tensor blurred = torch::nn::functional::avg_pool2d(
        x, torch::nn::functional::AvgPool2dFuncOptions(3).stride(1).padding(1).count_include_pad(
               false));
    const at::Tensor noisy = blurred + 10 * torch::randn(blurred.sizes());
    return noisy.clamp(0, 255).round().to(torch::kUInt8).permute({0, 2, 3, 1});
  };
  const Accuracy a = checker_accuracy(world, distort);
  EXPECT_GE(a.colour, 0.95);
  EXPECT_GE(a.shape, 0.95);
  EXPECT_GE(a.position, 0.95);
}

TEST_F(SynthWorldTest, CheckerFindsNothingOnABlankPicture) {
  const World world = World::standard(64, 0, 0.2);
  EXPECT_FALSE(read_shape(torch::full({64, 64, 3}, 210, torch::kUInt8), world).found);
  EXPECT_THAT(testing::error_of<ShapeError>([&] {
                read_shape(torch::zeros({64, 64}, torch::kUInt8), world);
              }),
              HasSubstr("uint8 [H >= 8, W >= 8, 3]"));
}

TEST_F(SynthWorldTest, EvaluatesGroundTruthRendersAndCountsMissingAsWrong) {
  SyntheticWorldOptions options = options_for(path("w"), 8, 3);
  options.render_eval = path("renders");
  write_synthetic_world(options);
  const World world = World::load(path("w"));
  const auto prompts = read_eval_prompts(path("w/eval_prompts.jsonl"));
  ASSERT_EQ(prompts.size(), 45u);  // 15 held-out combinations x (2 sizes and none)
  SynthMetrics m = evaluate_synth_images(world, prompts, path("renders"));
  EXPECT_EQ(m.count, 45);
  EXPECT_EQ(m.colour_accuracy, 1.0);
  EXPECT_EQ(m.shape_accuracy, 1.0);
  EXPECT_EQ(m.both_accuracy, 1.0);
  EXPECT_EQ(m.position_accuracy, 1.0);
  EXPECT_TRUE(m.missing.empty());

  fs::remove(path("renders/p004.png"));
  m = evaluate_synth_images(world, prompts, path("renders"));
  EXPECT_EQ(m.missing, std::vector<std::string>{"p004"});
  EXPECT_DOUBLE_EQ(m.both_accuracy, 44.0 / 45);
}

TEST_F(SynthWorldTest, LoadNamesAMissingWorldFolder) {
  EXPECT_THAT(testing::error_of<IoError>([&] { World::load(path("nowhere")); }),
              HasSubstr("nowhere: synthetic world folder"));
}

TEST(SynthVqa, ExactMatchIgnoresCaseAndPunctuation) {
  EXPECT_EQ(normalize_answer("  Red. "), "red");
  EXPECT_EQ(normalize_answer("On the   LEFT!"), "on the left");
  const std::vector<EvalQuestion> questions = {{"q0", "a.png", "What colour?", "red", "colour"},
                                               {"q1", "a.png", "What shape?", "circle", "shape"},
                                               {"q2", "a.png", "Where?", "left", "position"},
                                               {"q3", "b.png", "How many?", "two", "count"}};
  const VqaScore s = vqa_accuracy({{"q0", "Red."}, {"q1", "square"}, {"q2", " LEFT"}}, questions);
  EXPECT_EQ(s.count, 4);
  EXPECT_DOUBLE_EQ(s.accuracy, 0.5);
  EXPECT_EQ(s.by_kind.at("colour"), 1.0);
  EXPECT_EQ(s.by_kind.at("shape"), 0.0);
  EXPECT_EQ(s.by_kind.at("position"), 1.0);
  EXPECT_EQ(s.by_kind.at("count"), 0.0);
  EXPECT_EQ(s.missing, std::vector<std::string>{"q3"});
}

TEST_F(SynthWorldTest, PromptQuestionsAreTheTrainingWordingWithThePromptsWords) {
  EvalPrompt prompt{"p0", "a small red square at the top left", "red", "square", "top left"};
  const auto questions = prompt_questions(prompt);
  ASSERT_EQ(questions.size(), 3u);
  EXPECT_EQ(questions[0],
            (std::array<std::string, 3>{"colour", "What colour is the shape?", "red"}));
  EXPECT_EQ(questions[1], (std::array<std::string, 3>{"shape", "What shape is it?", "square"}));
  EXPECT_EQ(questions[2],
            (std::array<std::string, 3>{"position", "Where is the shape?", "top left"}));
  prompt.position.clear();
  EXPECT_EQ(prompt_questions(prompt).size(), 2u);

  // The same wording as the single-shape training conversations.
  write_synthetic_world(options_for(path("w"), 4, 0));
  const std::string vqa = file_bytes(path("w/train_vqa.jsonl"));
  for (const auto& [kind, question, answer] : questions) {
    EXPECT_THAT(vqa, HasSubstr(question)) << kind;
  }
}

TEST(SynthSelfCheck, AgreementCountsNormalisedMatchesPerCandidate) {
  const std::vector<std::string> expected = {"red", "square", "top left"};
  EXPECT_EQ(
      agreement({{"Red.", "circle", "top left"}, {"red", "square", "Top  left!"}, {"", "", ""}},
                expected),
      (std::vector<int>{2, 3, 0}));
  EXPECT_TRUE(agreement({}, expected).empty());
  EXPECT_THAT(testing::error_of<ShapeError>([&] {
                agreement({{"red", "square"}}, expected);
              }),
              HasSubstr("answers of candidate 0"));
}

TEST(SynthPsnr, KnownValues) {
  const at::Tensor a = torch::full({8, 8, 3}, 100, torch::kUInt8);
  EXPECT_TRUE(std::isinf(psnr(a, a)));
  // MSE 100: 10 log10(255^2 / 100) dB.
  EXPECT_NEAR(psnr(a, torch::full({8, 8, 3}, 110, torch::kUInt8)), 28.1308, 1e-4);
  EXPECT_THROW(psnr(a, torch::zeros({8, 8, 1}, torch::kUInt8)), ShapeError);
}

}  // namespace
}  // namespace vilau::eval
