// The tokenizer against golden ids from HF's slow LlamaTokenizer(legacy=False),
// transformers 4.36 (tests/reference/make_tokenizer_fixtures.py), plus templates,
// training labels and errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "test_util.h"
#include "vilau/core/error.h"
#include "vilau/tokenizer/conversation.h"
#include "vilau/tokenizer/detokenizer.h"
#include "vilau/tokenizer/tokenizer.h"

namespace vilau {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using vilau::testing::error_of;

const std::string kTokenizerDir = VILAU_TEST_DATA_DIR "/tokenizer";

const nlohmann::json& golden() {
  static const nlohmann::json g =
      nlohmann::json::parse(std::ifstream(kTokenizerDir + "/golden.json"));
  return g;
}

const Tokenizer& tokenizer() {
  static const Tokenizer t = Tokenizer::load(kTokenizerDir);
  return t;
}

std::vector<int64_t> without_images(const std::vector<int64_t>& ids) {
  std::vector<int64_t> out;
  std::copy_if(ids.begin(), ids.end(), std::back_inserter(out),
               [](int64_t id) { return id != kImageTokenIndex; });
  return out;
}

TEST(Tokenizer, SpecialIdsComeFromTheFiles) {
  const Tokenizer& t = tokenizer();
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_EQ(t.unk_id(), 0);
  EXPECT_EQ(t.pad_id(), 0);  // VILA-U pads with <unk>
  EXPECT_EQ(t.token_id("<im_start>"), 512);
  EXPECT_EQ(t.token_id("<im_end>"), 513);
  EXPECT_EQ(t.token_id("<vi_start>"), 514);
  EXPECT_EQ(t.token_id("<vi_end>"), 515);
  EXPECT_EQ(t.size(), 516);
}

TEST(Tokenizer, MatchesHfIdsForEveryGoldenCase) {
  const auto& cases = golden().at("cases");
  ASSERT_GE(cases.size(), 60u);
  for (const auto& c : cases) {
    const std::string text = c.at("text");
    SCOPED_TRACE(c.at("name").get<std::string>() + ": \"" + text + "\"");
    const auto expected = c.at("ids").get<std::vector<int64_t>>();
    if (c.value("image_token", false)) {
      EXPECT_EQ(tokenizer().encode_with_images(text), expected);
    } else {
      EXPECT_EQ(tokenizer().encode(text), expected);
    }
  }
}

TEST(Tokenizer, MatchesHfDecodeForEveryGoldenCase) {
  for (const auto& c : golden().at("cases")) {
    SCOPED_TRACE(c.at("name").get<std::string>());
    const auto ids = without_images(c.at("ids").get<std::vector<int64_t>>());
    EXPECT_EQ(tokenizer().decode(ids, false), c.at("decoded").get<std::string>());
    EXPECT_EQ(tokenizer().decode(ids, true), c.at("decoded_skip_special").get<std::string>());
  }
}

TEST(Tokenizer, DecodeRoundTripsPlainText) {
  int checked = 0;
  for (const auto& c : golden().at("cases")) {
    const std::string text = c.at("text");
    // Only where HF itself round-trips: special tokens gain spaces around them, a literal
    // "▁" is read as a space, and a leading run of spaces can come back as "▁" characters.
    if (c.value("image_token", false) || c.at("decoded_skip_special").get<std::string>() != text) {
      continue;
    }
    SCOPED_TRACE(c.at("name").get<std::string>());
    EXPECT_EQ(tokenizer().decode(tokenizer().encode(text), true), text);
    ++checked;
  }
  EXPECT_GE(checked, 30);
}

// Random answers over the whole vocabulary (byte pieces, added and special tokens
// included), decoded one token at a time, against decoding everything at once.
TEST(Detokenizer, EqualsDecodingTheWholeAnswerAfterEveryToken) {
  const Tokenizer& t = tokenizer();
  std::mt19937 rng(7);
  std::uniform_int_distribution<int64_t> any(0, t.size() - 1);
  int64_t held_back = 0, naive_differs = 0;
  for (int sample = 0; sample < 300; ++sample) {
    const bool skip = sample % 2 == 0;
    Detokenizer detokenizer(t, skip);
    std::vector<int64_t> ids;
    std::string naive;  // each token decoded on its own: what the window must avoid
    for (int i = 0; i < 40; ++i) {
      ids.push_back(any(rng));
      const std::string& text = detokenizer.push(ids.back());
      naive += t.decode({ids.back()}, skip);
      const std::string whole = t.decode(ids, skip);
      if (whole.size() >= 3 && whole.compare(whole.size() - 3, 3, "\xEF\xBF\xBD") == 0) {
        // An incomplete character waits; what is shown is the whole text before it.
        ASSERT_EQ(whole.compare(0, text.size(), text), 0) << "sample " << sample;
        held_back += text.size() < whole.size() ? 1 : 0;
      } else {
        ASSERT_EQ(text, whole) << "sample " << sample << ", token " << i;
      }
    }
    EXPECT_EQ(detokenizer.finish(), t.decode(ids, skip));
    EXPECT_EQ(detokenizer.tokens(), ids);
    naive_differs += naive != t.decode(ids, skip) ? 1 : 0;
  }
  EXPECT_GT(held_back, 0) << "no sample ended in an incomplete character";
  EXPECT_GT(naive_differs, 250) << "per-token decoding would pass this test";
}

TEST(Tokenizer, TemplatesRebuildTheGoldenPrompts) {
  int checked = 0;
  for (const auto& c : golden().at("cases")) {
    if (!c.contains("template")) {
      continue;
    }
    const std::string kind = c.at("template");
    const std::string user =
        c.contains("prompt") ? c.at("prompt").get<std::string>() : c.value("question", "");
    SCOPED_TRACE(c.at("name").get<std::string>());
    std::string built;
    if (kind == "t2i_cond") {
      built = text_to_image_prompt(user);
    } else if (kind == "t2i_uncond") {
      built = text_to_image_unconditional_prompt();
    } else if (kind == "t2v_cond") {
      built = text_to_video_prompt(user);
    } else if (kind == "understand") {
      built = understanding_prompt(user);
    } else if (kind.rfind("video", 0) == 0) {
      built = video_prompt(user, c.at("num_frames").get<int64_t>());
    } else {
      continue;  // multi-turn and training samples are checked below
    }
    EXPECT_EQ(built, c.at("text").get<std::string>());
    EXPECT_EQ(tokenizer().encode_with_images(built), c.at("ids").get<std::vector<int64_t>>());
    ++checked;
  }
  EXPECT_GE(checked, 12);
}

// UTF-8 of one code point.
std::string utf8(char32_t c) {
  std::string out;
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
  return out;
}

// Against Python's own str.isspace() table (golden.json): every code point.
TEST(Conversation, PythonStripRemovesExactlyPythonsWhitespace) {
  const std::vector<int64_t> spaces = golden().at("python_whitespace");
  ASSERT_GE(spaces.size(), 25u);
  size_t stripped = 0;
  for (char32_t c = 0; c < 0x110000; ++c) {
    if (c >= 0xD800 && c <= 0xDFFF) continue;  // surrogates have no UTF-8
    const std::string ch = utf8(c);
    const bool space =
        std::find(spaces.begin(), spaces.end(), static_cast<int64_t>(c)) != spaces.end();
    const std::string out = python_strip(ch + "a" + ch);
    ASSERT_EQ(out, space ? "a" : ch + "a" + ch) << "U+" << std::hex << static_cast<uint32_t>(c);
    stripped += space;
  }
  EXPECT_EQ(stripped, spaces.size());
  EXPECT_EQ(python_strip(" \u3000\n"), "");
  EXPECT_EQ(python_strip("a b\u00a0c"), "a b\u00a0c");  // inner whitespace stays
  EXPECT_EQ(python_strip("\xff "), "\xff");             // an invalid byte is not a space
}

TEST(Conversation, RendersVicunaV1) {
  const std::string sys = kSystemPrompt;
  EXPECT_EQ(text_to_image_unconditional_prompt(), sys + " USER:ASSISTANT: <im_start>");
  EXPECT_EQ(text_to_image_prompt("  a cat  "), sys + " USER: a cat ASSISTANT: <im_start>");
  EXPECT_EQ(text_to_video_prompt("waves"), sys + " USER: waves ASSISTANT: <vi_start>");
  EXPECT_EQ(video_prompt("why?", 2), sys + " USER: <image>\n<image>\nwhy? ASSISTANT:");
  EXPECT_EQ(render_chat({{"<image>\nq1", "a1"}, {"q2", ""}}),
            sys + " USER: <image>\nq1 ASSISTANT: a1</s>USER: q2 ASSISTANT:");
}

// Which positions count for the loss: only the answers (and their </s>).
TEST(Conversation, TrainingLabelsKeepOnlyAnswers) {
  const Tokenizer& t = tokenizer();
  const TrainingSample gen = make_generation_sample(t, "a red cube on a table");
  ASSERT_EQ(gen.input_ids.size(), gen.labels.size());
  const auto n = gen.input_ids.size();
  // The tail is "▁" <im_start> <image> <im_end> </s>; the official masking keeps the "▁".
  const std::vector<int64_t> tail(gen.input_ids.end() - 4, gen.input_ids.end());
  EXPECT_EQ(tail, (std::vector<int64_t>{t.token_id("<im_start>"), kImageTokenIndex,
                                        t.token_id("<im_end>"), t.eos_id()}));
  for (size_t i = 0; i < n; ++i) {
    if (i + 5 < n) {
      EXPECT_EQ(gen.labels[i], kIgnoreIndex) << i;
    } else {
      EXPECT_EQ(gen.labels[i], gen.input_ids[i]) << i;
    }
  }
  EXPECT_EQ(
      gen.input_ids,
      t.encode_with_images(render_chat({{"a red cube on a table", "<im_start><image><im_end>"}})));

  // Two turns: both answers count, the user turns and the system prompt do not.
  const TrainingSample chat =
      make_training_sample(t, {{"<image>\nWhat is it?", "A cube."}, {"Colour?", "Red."}});
  std::vector<int64_t> kept;
  for (size_t i = 0; i < chat.labels.size(); ++i) {
    if (chat.labels[i] != kIgnoreIndex) kept.push_back(chat.labels[i]);
  }
  std::vector<int64_t> answers = t.encode("A cube.", false);
  answers.push_back(t.eos_id());
  const auto red = t.encode("Red.", false);
  answers.insert(answers.end(), red.begin(), red.end());
  answers.push_back(t.eos_id());
  EXPECT_EQ(t.decode(kept), t.decode(answers));
  EXPECT_EQ(std::count(chat.labels.begin(), chat.labels.end(), t.eos_id()), 2);

  const TrainingSample video = make_generation_sample(t, "", 3);
  EXPECT_EQ(std::count(video.input_ids.begin(), video.input_ids.end(), kImageTokenIndex), 3);
  EXPECT_EQ(std::count(video.labels.begin(), video.labels.end(), kImageTokenIndex), 3);
  EXPECT_THAT(t.decode(without_images(video.input_ids)), HasSubstr("USER: An image. ASSISTANT:"));
}

// Caption dropout trains exactly the prompt that CFG's unconditional rows run.
TEST(Conversation, UnconditionalSampleStartsWithTheGuidancePrompt) {
  const Tokenizer& t = tokenizer();
  const TrainingSample image = make_unconditional_generation_sample(t);
  const std::vector<int64_t> prompt = t.encode(text_to_image_unconditional_prompt());
  ASSERT_GT(image.input_ids.size(), prompt.size());
  EXPECT_EQ(std::vector<int64_t>(image.input_ids.begin(), image.input_ids.begin() + prompt.size()),
            prompt);
  EXPECT_EQ(std::vector<int64_t>(image.input_ids.begin() + prompt.size(), image.input_ids.end()),
            (std::vector<int64_t>{kImageTokenIndex, t.token_id("<im_end>"), t.eos_id()}));
  // Labelled from <im_start> on, so the image is a visual target.
  for (size_t i = 0; i < image.labels.size(); ++i) {
    EXPECT_EQ(image.labels[i], i + 1 >= prompt.size() ? image.input_ids[i] : kIgnoreIndex) << i;
  }
  EXPECT_EQ(generation_targets(image, t.token_id("<im_start>")), std::vector<bool>{true});
  // The official rule takes a generated video from ids[-10:-3] being all frames.
  const TrainingSample video = make_unconditional_generation_sample(t, 8);
  const std::vector<int64_t> video_prompt = t.encode(text_to_video_prompt(""));
  EXPECT_EQ(
      std::vector<int64_t>(video.input_ids.begin(), video.input_ids.begin() + video_prompt.size()),
      video_prompt);
  EXPECT_EQ(generation_targets(video, t.token_id("<im_start>")), std::vector<bool>(8, true));
}

// SPEC §3.4: only generated images and videos are visual targets.
TEST(Conversation, GenerationTargetsFollowTheOfficialRule) {
  const Tokenizer& t = tokenizer();
  const int64_t im_start = t.token_id("<im_start>");
  EXPECT_EQ(generation_targets(make_generation_sample(t, "a red cube"), im_start),
            std::vector<bool>{true});
  EXPECT_EQ(generation_targets(make_generation_sample(t, "waves", 8), im_start),
            std::vector<bool>(8, true));
  // Understanding: the image is in the user's turn, so it is input only.
  EXPECT_EQ(
      generation_targets(make_training_sample(t, {{"<image>\nWhat is it?", "A cube."}}), im_start),
      std::vector<bool>{false});
  std::string frames;
  for (int i = 0; i < 8; ++i) frames += "<image>\n";
  EXPECT_EQ(generation_targets(
                make_training_sample(t, {{frames + "What happens?", "A cat jumps."}}), im_start),
            std::vector<bool>(8, false));
  // An image answer in a multi-turn chat whose last turn is text is not a target.
  EXPECT_EQ(
      generation_targets(make_training_sample(t, {{"Draw a cube", "<im_start><image><im_end>"},
                                                  {"Colour?", "Red."}}),
                         im_start),
      std::vector<bool>{false});
}

class BrokenTokenizer : public vilau::testing::TempDirTest {
 protected:
  void copy_all() {
    for (const auto& f : fs::directory_iterator(kTokenizerDir)) {
      fs::copy_file(f.path(), dir_ / f.path().filename());
    }
  }
};

TEST_F(BrokenTokenizer, MissingModel) {
  EXPECT_THAT(error_of<IoError>([&] { Tokenizer::load(dir_.string()); }),
              AllOf(HasSubstr("tokenizer.model"), HasSubstr("no such file")));
}

TEST_F(BrokenTokenizer, CorruptModel) {
  copy_all();
  std::ofstream(dir_ / "tokenizer.model", std::ios::binary) << "\x0a\xff\xff\xff\xff\x0f garbage";
  EXPECT_THAT(error_of<FormatError>([&] { Tokenizer::load(dir_.string()); }),
              AllOf(HasSubstr("tokenizer.model"), HasSubstr("corrupt SentencePiece model")));
}

TEST_F(BrokenTokenizer, MissingAddedToken) {
  copy_all();
  fs::remove(dir_ / "tokenizer_config.json");  // would list the token too
  std::ofstream(dir_ / "added_tokens.json")
      << R"({"<im_start>": 512, "<im_end>": 513, "<vi_start>": 514})";
  EXPECT_THAT(error_of<FormatError>([&] { Tokenizer::load(dir_.string()); }),
              AllOf(HasSubstr("added_tokens.json"), HasSubstr("missing added token '<vi_end>'")));
}

TEST_F(BrokenTokenizer, MissingAddedTokensFile) {
  copy_all();
  fs::remove(dir_ / "added_tokens.json");
  EXPECT_THAT(error_of<IoError>([&] { Tokenizer::load(dir_.string()); }),
              AllOf(HasSubstr("added_tokens.json"), HasSubstr("no such file")));
}

TEST(TrainTokenizer, TrainsAFolderThatLoads) {
  const fs::path dir = fs::temp_directory_path() / "vilau_train_tokenizer";
  fs::remove_all(dir);
  train_tokenizer(VILAU_SOURCE_DIR "/tests/reference/data/corpus.txt", dir.string(), 400);
  const Tokenizer t = Tokenizer::load(dir.string());
  EXPECT_EQ(t.size(), 404);
  EXPECT_EQ(t.token_id("<im_start>"), 400);
  const std::string text = "a small red cube, 42 of them 🙂";
  EXPECT_EQ(t.decode(t.encode(text), true), text);
  fs::remove_all(dir);
}

// The system prompt opens every sample: learnt from template lines it takes a third of the
// pieces, and multi-turn samples still mask their labels round by round.
TEST(TrainTokenizer, SystemPromptLinesShortenSamplesAndKeepRounds) {
  const fs::path dir = fs::temp_directory_path() / "vilau_train_tokenizer_template";
  fs::remove_all(dir);
  const std::string corpus = VILAU_SOURCE_DIR "/tests/reference/data/corpus.txt";
  train_tokenizer(corpus, (dir / "plain").string(), 400);
  train_tokenizer(corpus, (dir / "template").string(), 400, 1000);
  EXPECT_FALSE(fs::exists(dir / "template" / "system_prompt_corpus.txt"));
  const Tokenizer plain = Tokenizer::load((dir / "plain").string());
  const Tokenizer learnt = Tokenizer::load((dir / "template").string());
  const auto pieces = [](const Tokenizer& t) { return t.encode(kSystemPrompt, false).size(); };
  EXPECT_LT(3 * pieces(learnt), 2 * pieces(plain)) << pieces(learnt) << " vs " << pieces(plain);
  const TrainingSample sample = make_training_sample(
      learnt, {{"<image>\nWhat colour is it?", "red"}, {"What shape is it?", "circle"}});
  EXPECT_EQ(sample.rounds_mismatch, "");
  EXPECT_EQ(std::count_if(sample.labels.begin(), sample.labels.end(),
                          [](int64_t id) { return id != kIgnoreIndex; }),
            static_cast<long>(learnt.encode("red", false).size() +
                              learnt.encode("circle", false).size() + 2));  // and two </s>

  // An answer holding the round separator splits into rounds that no longer add up: the
  // sample says so (the loader then counts it as bad) instead of training on nothing.
  const TrainingSample broken = make_training_sample(learnt, {{"<image>\nWhat?", "red</s>blue"}});
  EXPECT_THAT(broken.rounds_mismatch, HasSubstr("rounds cover"));
  EXPECT_TRUE(std::all_of(broken.labels.begin(), broken.labels.end(),
                          [](int64_t id) { return id == kIgnoreIndex; }));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace vilau
