// The VQA benchmark scorers and their files (docs/evaluation.md, VQA benchmarks). Every expected
// value is worked out by hand in the comments from the official rules, not taken from the code.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_util.h"
#include "vilau/core/error.h"
#include "vilau/eval/vqa_benchmark.h"
#include "vilau/eval/vqa_scoring.h"

namespace vilau::eval {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::HasSubstr;
using vilau::testing::error_of;
using vilau::testing::TempDirTest;

const fs::path kData = fs::path(VILAU_TEST_DATA_DIR) / "vqa";

std::map<std::string, std::string> texts(const std::map<std::string, BenchmarkAnswer>& answers) {
  std::map<std::string, std::string> out;
  for (const auto& [id, a] : answers) out[id] = a.text;
  return out;
}

// Ten annotators: `agree` of them said "2", the rest "3".
std::vector<std::string> humans(int agree) {
  std::vector<std::string> out(10, "3");
  std::fill(out.begin(), out.begin() + agree, "2");
  return out;
}

TEST(VqaNormalize, NumbersArticlesAndContractions) {
  EXPECT_EQ(vqa_normalize_answer("Two"), "2");
  EXPECT_EQ(vqa_normalize_answer("two dogs"), "2 dogs");
  EXPECT_EQ(vqa_normalize_answer("none"), "0");
  EXPECT_EQ(vqa_normalize_answer("A dog"), "dog");
  EXPECT_EQ(vqa_normalize_answer("the  red   an apple"), "red apple");
  EXPECT_EQ(vqa_normalize_answer("dont"), "don't");
  EXPECT_EQ(vqa_normalize_answer("Im"), "im");  // lower-cased before the table is read
  EXPECT_EQ(vqa_normalize_answer("  Yes\n"), "yes");
  EXPECT_EQ(vqa_normalize_answer("on\tthe table"), "on table");
}

TEST(VqaNormalize, Punctuation) {
  EXPECT_EQ(vqa_normalize_answer("yes."), "yes");
  EXPECT_EQ(vqa_normalize_answer("Yes!"), "yes");
  // Apostrophes and colons are not in the list: they stay.
  EXPECT_EQ(vqa_normalize_answer("it's"), "it's");
  EXPECT_EQ(vqa_normalize_answer("10:30"), "10:30");
  // A hyphen between letters becomes a space; one touching a space is deleted.
  EXPECT_EQ(vqa_normalize_answer("t-shirt"), "t shirt");
  EXPECT_EQ(vqa_process_punctuation("left - right"), "left  right");
  // A digit,digit group anywhere deletes every mark instead of spacing it.
  EXPECT_EQ(vqa_normalize_answer("1,000"), "1000");
  EXPECT_EQ(vqa_process_punctuation("1,000 (about)"), "1000 about");
  EXPECT_EQ(vqa_process_punctuation("red,blue"), "red blue");
  EXPECT_EQ(vqa_process_punctuation("(about)"), " about ");
  // Periods go unless a digit follows: decimals keep theirs.
  EXPECT_EQ(vqa_normalize_answer("2.5"), "2.5");
  EXPECT_EQ(vqa_normalize_answer("5."), "5");
  EXPECT_EQ(vqa_process_punctuation("..5"), ".5");
  // re.sub's count is re.UNICODE = 32: of 40 trailing periods, 8 stay.
  EXPECT_EQ(vqa_process_punctuation("x" + std::string(40, '.')), "x" + std::string(8, '.'));
}

TEST(VqaAccuracy, LeaveOneAnnotatorOut) {
  // k of 10 annotators agree with the answer. Leaving out one of the k leaves k-1 matches,
  // leaving out one of the others leaves k; each subset scores min(1, matches / 3):
  //   k=0: 0
  //   k=1: (1*0 + 9*(1/3)) / 10 = 0.3
  //   k=2: (2*(1/3) + 8*(2/3)) / 10 = 18/30 = 0.6
  //   k=3: (3*(2/3) + 7*1) / 10 = 0.9
  //   k=4: (4*1 + 6*1) / 10 = 1
  EXPECT_DOUBLE_EQ(vqa_question_accuracy("two", humans(0)), 0.0);
  EXPECT_DOUBLE_EQ(vqa_question_accuracy("two", humans(1)), 0.3);
  EXPECT_DOUBLE_EQ(vqa_question_accuracy("two", humans(2)), 0.6);
  EXPECT_DOUBLE_EQ(vqa_question_accuracy("2.", humans(3)), 0.9);
  EXPECT_DOUBLE_EQ(vqa_question_accuracy("Two", humans(4)), 1.0);
  EXPECT_DOUBLE_EQ(vqa_question_accuracy("2", humans(10)), 1.0);
}

TEST(VqaAccuracy, HumanAnswersFollowTheOfficialQuirks) {
  // Ten identical "t-shirt": the human answers are left untouched while the model's
  // "t-shirt" becomes "t shirt", so it matches none of them.
  EXPECT_DOUBLE_EQ(vqa_question_accuracy("t-shirt", std::vector<std::string>(10, "t-shirt")), 0.0);
  // With a second answer among them the humans' hyphens become spaces too: 9 match, so every
  // subset keeps at least 8 matches and scores 1.
  std::vector<std::string> mixed(9, "t-shirt");
  mixed.push_back("shirt");
  EXPECT_DOUBLE_EQ(vqa_question_accuracy("t-shirt", mixed), 1.0);
  // Human answers are never lower-cased nor have articles dropped.
  EXPECT_DOUBLE_EQ(vqa_question_accuracy("Dog", std::vector<std::string>(10, "Dog")), 0.0);
  std::vector<std::string> articles(5, "a dog");
  articles.resize(10, "dog");
  // "A dog" -> "dog" matches the 5 "dog": as k=5 above, every subset has >= 4 matches.
  EXPECT_DOUBLE_EQ(vqa_question_accuracy("A dog", articles), 1.0);
}

TEST(VqaAccuracy, ScoreWithAnswerTypes) {
  std::map<std::string, VqaV2Truth> truth = {
      {"1", {std::vector<std::string>(10, "yes"), "yes/no", "is the"}},
      {"2", {humans(2), "number", "how many"}},
      {"3", {std::vector<std::string>(10, "red"), "other", "what color is the"}}};
  // q1 scores 1, q2 0.6 (k=2), q3 is unanswered and scores 0: (1 + 0.6 + 0) / 3.
  const VqaV2Score s = score_vqav2(truth, {{"1", "Yes"}, {"2", "two"}});
  EXPECT_NEAR(s.accuracy, 100.0 * 1.6 / 3.0, 1e-9);
  EXPECT_EQ(s.count, 3);
  EXPECT_EQ(s.missing, std::vector<std::string>{"3"});
  EXPECT_DOUBLE_EQ(s.by_answer_type.at("yes/no"), 100.0);
  EXPECT_DOUBLE_EQ(s.by_answer_type.at("number"), 60.0);
  EXPECT_DOUBLE_EQ(s.by_answer_type.at("other"), 0.0);
  EXPECT_DOUBLE_EQ(s.by_question_type.at("how many"), 60.0);
}

TEST(Pope, ParsesAnswersAsLlava) {
  EXPECT_TRUE(pope_answer_is_yes("Yes, there is a dog."));
  EXPECT_FALSE(pope_answer_is_yes("No."));
  EXPECT_FALSE(pope_answer_is_yes("no, it is not"));  // the comma goes, "no" is a word
  EXPECT_FALSE(pope_answer_is_yes("There is not a cat"));
  EXPECT_TRUE(pope_answer_is_yes("Yes. There is no dog."));  // only the first sentence counts
  EXPECT_TRUE(pope_answer_is_yes("Nope"));
  EXPECT_TRUE(pope_answer_is_yes("NO"));  // only "No", "no" and "not" are read as no
  EXPECT_TRUE(pope_answer_is_yes(""));
}

TEST(Pope, FixtureCounts) {
  const auto questions = read_vqa_questions((kData / "pope_questions.jsonl").string());
  const BenchmarkTruth truth = load_truth(Benchmark::pope, questions, "");
  ASSERT_TRUE(truth.available);
  const auto answers = read_benchmark_answers((kData / "pope_answers.jsonl").string());
  const json m = score_benchmark(truth, questions, texts(answers)).metrics;
  // adversarial: TP 1 (q1), FN 1 (q2), FP 2 (q3, q5), TN 1 (q4):
  //   accuracy 2/5, precision 1/3, recall 1/2, F1 2*(1/6)/(5/6) = 0.4, yes-ratio 3/5.
  const json& adv = m["by_category"]["adversarial"];
  EXPECT_EQ(adv["tp"], 1);
  EXPECT_EQ(adv["fn"], 1);
  EXPECT_EQ(adv["fp"], 2);
  EXPECT_EQ(adv["tn"], 1);
  EXPECT_NEAR(adv["accuracy"].get<double>(), 40.0, 1e-9);
  EXPECT_NEAR(adv["precision"].get<double>(), 100.0 / 3.0, 1e-9);
  EXPECT_NEAR(adv["recall"].get<double>(), 50.0, 1e-9);
  EXPECT_NEAR(adv["f1"].get<double>(), 40.0, 1e-9);
  EXPECT_NEAR(adv["yes_ratio"].get<double>(), 60.0, 1e-9);
  // random: TP 2 (q6, q7), FP 1 (q9 "Nope"), TN 2 (q8, q10):
  //   accuracy 4/5, precision 2/3, recall 1, F1 2*(2/3)/(5/3) = 0.8, yes-ratio 3/5.
  const json& rnd = m["by_category"]["random"];
  EXPECT_NEAR(rnd["accuracy"].get<double>(), 80.0, 1e-9);
  EXPECT_NEAR(rnd["precision"].get<double>(), 200.0 / 3.0, 1e-9);
  EXPECT_NEAR(rnd["recall"].get<double>(), 100.0, 1e-9);
  EXPECT_NEAR(rnd["f1"].get<double>(), 80.0, 1e-9);
  // pooled: TP 3, FN 1, FP 3, TN 3: accuracy 6/10, precision 1/2, recall 3/4,
  //   F1 2*(3/8)/(5/4) = 0.6, yes-ratio 6/10.
  EXPECT_NEAR(m["all"]["accuracy"].get<double>(), 60.0, 1e-9);
  EXPECT_NEAR(m["all"]["precision"].get<double>(), 50.0, 1e-9);
  EXPECT_NEAR(m["all"]["recall"].get<double>(), 75.0, 1e-9);
  EXPECT_NEAR(m["all"]["f1"].get<double>(), 60.0, 1e-9);
  EXPECT_NEAR(m["all"]["yes_ratio"].get<double>(), 60.0, 1e-9);
  // mean over the two categories: F1 (40 + 80) / 2, precision (100/3 + 200/3) / 2.
  EXPECT_NEAR(m["category_mean"]["f1"].get<double>(), 60.0, 1e-9);
  EXPECT_NEAR(m["category_mean"]["precision"].get<double>(), 50.0, 1e-9);
}

TEST(Pope, UnansweredCountsAsWrong) {
  // A missing "yes" becomes a false negative, a missing "no" a false positive.
  const PopeScore s = score_pope({{"a", {"random", true}}, {"b", {"random", false}}}, {});
  EXPECT_EQ(s.all.fn, 1);
  EXPECT_EQ(s.all.fp, 1);
  EXPECT_EQ(s.all.tp + s.all.tn, 0);
  EXPECT_EQ(s.missing.size(), 2u);
}

TEST(Mme, ParsesAnswersAsCalculationPy) {
  EXPECT_EQ(mme_parse_answer("Yes"), "yes");
  EXPECT_EQ(mme_parse_answer("No, there is none."), "no");
  EXPECT_EQ(mme_parse_answer("Not really"), "no");            // "not " holds "no"
  EXPECT_EQ(mme_parse_answer("The answer is yes"), "other");  // "the " holds neither
  EXPECT_EQ(mme_parse_answer("yes."), "yes");
  EXPECT_EQ(mme_parse_answer("I don't know"), "other");
}

TEST(Mme, FixtureScores) {
  const auto questions = read_vqa_questions((kData / "mme_questions.jsonl").string());
  const BenchmarkTruth truth = load_truth(Benchmark::mme, questions, "");
  const auto answers = read_benchmark_answers((kData / "mme_answers.jsonl").string());
  const json m = score_benchmark(truth, questions, texts(answers)).metrics;
  // existence: e1 both right, e2 one right (yes answered "no"): acc 3/4 = 75, acc+ 1/2 = 50.
  const json& existence = m["subtasks"]["existence"];
  EXPECT_NEAR(existence["acc"].get<double>(), 75.0, 1e-9);
  EXPECT_NEAR(existence["acc_plus"].get<double>(), 50.0, 1e-9);
  EXPECT_NEAR(existence["score"].get<double>(), 125.0, 1e-9);
  // code_reasoning: c1 both right, c2 one ("The answer is yes" is other), c3 one (the "no"
  // question answered yes): acc 4/6, acc+ 1/3, score 200/3 + 100/3 = 100.
  const json& code = m["subtasks"]["code_reasoning"];
  EXPECT_NEAR(code["acc"].get<double>(), 400.0 / 6.0, 1e-9);
  EXPECT_NEAR(code["acc_plus"].get<double>(), 100.0 / 3.0, 1e-9);
  EXPECT_NEAR(code["score"].get<double>(), 100.0, 1e-9);
  EXPECT_EQ(code["other"], 1);
  EXPECT_EQ(code["images"], 3);
  EXPECT_NEAR(m["perception"].get<double>(), 125.0, 1e-9);
  EXPECT_NEAR(m["cognition"].get<double>(), 100.0, 1e-9);
  EXPECT_NEAR(m["total"].get<double>(), 225.0, 1e-9);
}

TEST(Mme, RejectsUnpairedImagesAndUnknownSubtasks) {
  EXPECT_THAT(error_of<FormatError>([] {
                score_mme({{"1", {"count", "a.png", "yes"}},
                           {"2", {"count", "a.png", "no"}},
                           {"3", {"count", "a.png", "no"}}},
                          {});
              }),
              HasSubstr("image 'a.png': expected exactly 2 questions"));
  EXPECT_THAT(error_of<FormatError>([] {
                score_mme({{"1", {"colour", "a.png", "yes"}}}, {});
              }),
              HasSubstr("category 'colour'"));
}

TEST(Gqa, ExactMatchAfterLlavaConversion) {
  EXPECT_EQ(gqa_normalize_answer("Yes."), "yes");
  EXPECT_EQ(gqa_normalize_answer("Table..."), "table");
  EXPECT_EQ(gqa_normalize_answer(" left"), " left");  // no other clean-up
  const ExactMatchScore s = score_gqa({{"a", {"yes", "verify"}},
                                       {"b", {"table", "query"}},
                                       {"c", {"traffic light", "query"}},
                                       {"d", {"left", "choose"}}},
                                      {{"a", "Yes."}, {"b", "A table"}, {"c", "Traffic light"}});
  // a and c match; b keeps its article; d is unanswered: 2 of 4.
  EXPECT_DOUBLE_EQ(s.accuracy, 50.0);
  EXPECT_DOUBLE_EQ(s.by_category.at("query"), 50.0);
  EXPECT_DOUBLE_EQ(s.by_category.at("verify"), 100.0);
  EXPECT_EQ(s.missing, std::vector<std::string>{"d"});
}

TEST(VqaPrompt, SuffixRules) {
  const std::string suffix = default_prompt_suffix(Benchmark::vqav2);
  EXPECT_EQ(suffix, "\nAnswer the question using a single word or phrase.");
  EXPECT_EQ(benchmark_prompt(Benchmark::vqav2, "What is it?", suffix), "What is it?" + suffix);
  // LLaVA's question files already end with it.
  EXPECT_EQ(benchmark_prompt(Benchmark::gqa, "What is it?" + suffix, suffix),
            "What is it?" + suffix);
  EXPECT_EQ(benchmark_prompt(Benchmark::mme, "Is it red? Please answer yes or no.", suffix),
            "Is it red?" + suffix);
  EXPECT_EQ(benchmark_prompt(Benchmark::mme, "Is it red? Please answer yes or no.", ""),
            "Is it red? Please answer yes or no.");
  EXPECT_EQ(default_prompt_suffix(Benchmark::synth), "");
  EXPECT_EQ(default_max_new_tokens(Benchmark::pope), 128);
}

class VqaFiles : public TempDirTest {
 protected:
  std::string write(const std::string& name, const std::string& text) {
    std::ofstream(path(name)) << text;
    return path(name);
  }
};

TEST_F(VqaFiles, MalformedQuestionsNameFileLineAndKey) {
  const std::string missing = write("q.jsonl",
                                    "{\"question_id\": 1, \"image\": \"a.png\", \"text\": \"x\"}\n"
                                    "\n"
                                    "{\"question_id\": 2, \"text\": \"y\"}\n");
  EXPECT_THAT(error_of<FormatError>([&] { read_vqa_questions(missing); }),
              HasSubstr("q.jsonl:3: key 'image': expected a string, found nothing"));
  const std::string bad = write("bad.jsonl", "{\"question_id\": 1, \"image\": \"a.png\"\n");
  EXPECT_THAT(error_of<FormatError>([&] { read_vqa_questions(bad); }),
              HasSubstr("bad.jsonl:1: invalid JSON"));
  const std::string no_id = write("noid.jsonl", "{\"image\": \"a.png\", \"text\": \"x\"}\n");
  EXPECT_THAT(error_of<FormatError>([&] { read_vqa_questions(no_id); }),
              HasSubstr("noid.jsonl:1: key 'question_id'"));
  const std::string twice = write("twice.jsonl",
                                  "{\"id\": \"a\", \"image\": \"a.png\", \"question\": \"x\"}\n"
                                  "{\"id\": \"a\", \"image\": \"b.png\", \"question\": \"y\"}\n");
  EXPECT_THAT(
      error_of<FormatError>([&] { read_vqa_questions(twice); }),
      HasSubstr("twice.jsonl:2: question_id 'a': expected unique ids, found also at line 1"));
}

TEST_F(VqaFiles, MalformedGroundTruth) {
  const auto questions = read_vqa_questions((kData / "tiny_questions.jsonl").string());
  const std::string official =
      write("ann.json",
            R"({"annotations": [{"question_id": 1001, "answers": [{"answer": "red"}]},
                          {"question_id": 1002, "answer": "1"}]})");
  EXPECT_THAT(error_of<FormatError>([&] { load_truth(Benchmark::vqav2, questions, official); }),
              HasSubstr("ann.json: annotations[1]: key 'answers'"));
  const std::string lines = write("ann.jsonl", "{\"question_id\": 1001, \"answers\": [\"red\"]}\n");
  EXPECT_THAT(error_of<FormatError>([&] { load_truth(Benchmark::vqav2, questions, lines); }),
              HasSubstr("tiny_questions.jsonl:2: question_id 1002: expected an entry in the "
                        "annotations"));
  const std::string pope = write("pope.jsonl",
                                 "{\"question_id\": 1, \"image\": \"a.png\", \"text\": \"x\", "
                                 "\"label\": \"maybe\"}\n");
  EXPECT_THAT(
      error_of<FormatError>([&] { load_truth(Benchmark::pope, read_vqa_questions(pope), ""); }),
      HasSubstr("pope.jsonl:1: key 'label': expected yes or no, found 'maybe'"));
  const std::string partial = write("gqa.jsonl",
                                    "{\"question_id\": \"a\", \"image\": \"a.png\", \"text\": "
                                    "\"x\", \"answer\": \"yes\"}\n"
                                    "{\"question_id\": \"b\", \"image\": \"a.png\", \"text\": "
                                    "\"y\"}\n");
  EXPECT_THAT(
      error_of<FormatError>([&] { load_truth(Benchmark::gqa, read_vqa_questions(partial), ""); }),
      HasSubstr("gqa.jsonl:2: key 'answer': expected ground truth for every question or for "
                "none"));
  const std::string answers = write("answers.jsonl", "{\"question_id\": 1001}\n");
  EXPECT_THAT(error_of<FormatError>([&] { read_benchmark_answers(answers); }),
              HasSubstr("answers.jsonl:1: key 'text': expected a string, found nothing"));
}

TEST_F(VqaFiles, Vqav2OutputsFromTheOfficialAnnotations) {
  const auto questions = read_vqa_questions((kData / "tiny_questions.jsonl").string());
  const BenchmarkTruth truth =
      load_truth(Benchmark::vqav2, questions, (kData / "tiny_annotations.json").string());
  std::map<std::string, BenchmarkAnswer> answers = {
      {"1001", {"Red.", "What color is the shape?\nAnswer ..."}},
      {"1002", {"One", ""}},
      {"1004", {"a circle", ""}}};
  const json m = write_benchmark_outputs(dir_.string(), truth, questions, answers);
  // 1001: 9 of 10 say "red" -> 1. 1002: "one" -> "1", 8 say "1" -> 1 (the humans' "one" is
  // kept as is). 1003: unanswered -> 0. 1004: 7 "circle", and "circle." becomes "circle"
  // (the answers differ, so the humans' punctuation is processed): 8 match -> 1.
  EXPECT_NEAR(m["accuracy"].get<double>(), 75.0, 1e-9);
  EXPECT_NEAR(m["by_answer_type"]["number"].get<double>(), 100.0, 1e-9);
  EXPECT_NEAR(m["by_answer_type"]["yes/no"].get<double>(), 0.0, 1e-9);
  EXPECT_EQ(m["answered"], 3);
  const json submission = json::parse(std::ifstream(path("submission.json")));
  ASSERT_EQ(submission.size(), 4u);
  EXPECT_EQ(submission[0], json({{"question_id", 1001}, {"answer", "red"}}));
  EXPECT_EQ(submission[2], json({{"question_id", 1003}, {"answer", ""}}));
  EXPECT_EQ(submission[3]["answer"], "circle");
  std::ifstream samples(path("lmms_eval_samples.jsonl"));
  std::string line;
  std::vector<json> rows;
  while (std::getline(samples, line)) rows.push_back(json::parse(line));
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0]["doc_id"], 0);
  EXPECT_EQ(rows[0]["question_id"], 1001);
  EXPECT_EQ(rows[0]["input"], "What color is the shape?\nAnswer ...");
  EXPECT_EQ(rows[0]["target"], "red");
  EXPECT_EQ(rows[0]["resps"], json::parse(R"([["Red."]])"));
  EXPECT_EQ(rows[0]["filtered_resps"], json::parse(R"(["Red."])"));
  EXPECT_DOUBLE_EQ(rows[0]["exact_match"].get<double>(), 1.0);
  EXPECT_EQ(rows[2]["doc_id"], 3);
  EXPECT_EQ(rows[1]["input"], "How many shapes are there?");  // no prompt recorded
}

TEST_F(VqaFiles, SubmissionNeedsIntegerIds) {
  const std::string q =
      write("q.jsonl", "{\"question_id\": \"abc\", \"image\": \"a.png\", \"text\": \"x\"}\n");
  EXPECT_THAT(error_of<FormatError>([&] { vqav2_submission(read_vqa_questions(q), {}); }),
              HasSubstr("q.jsonl:1: question_id 'abc': expected a non-negative integer"));
}

TEST_F(VqaFiles, SynthBenchmarkKeepsTheDemoScorer) {
  const std::string q = write("eval_vqa.jsonl",
                              "{\"id\": \"q0\", \"image\": \"a.png\", \"question\": \"Colour?\", "
                              "\"answer\": \"red\", \"kind\": \"colour\"}\n"
                              "{\"id\": \"q1\", \"image\": \"a.png\", \"question\": \"Shape?\", "
                              "\"answer\": \"circle\", \"kind\": \"shape\"}\n");
  const auto questions = read_vqa_questions(q);
  const BenchmarkTruth truth = load_truth(Benchmark::synth, questions, "");
  const json m = score_benchmark(truth, questions, {{"q0", "Red."}, {"q1", "square"}}).metrics;
  EXPECT_DOUBLE_EQ(m["vqa_accuracy"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(m["by_kind"]["colour"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(m["by_kind"]["shape"].get<double>(), 0.0);
}

}  // namespace
}  // namespace vilau::eval
