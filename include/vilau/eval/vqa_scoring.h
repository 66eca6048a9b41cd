#pragma once
// Scorers of the public understanding benchmarks, written from the rules of their official
// evaluation code (docs/evaluation.md, VQA benchmarks lists the sources and every rule):
//   VQAv2  the VQA API's vqaEval.py (answer normalisation, leave-one-annotator-out accuracy);
//   POPE   LLaVA's eval_pope.py (yes/no parsing, precision, recall, F1, yes-ratio);
//   MME    the MME tool's calculation.py (yes/no/other parsing, acc, acc+, score);
//   GQA    LLaVA's convert_gqa_for_eval.py, then the GQA eval.py exact match.
// Accuracies, precision, recall and F1 are in percent, as the papers' tables give them; MME
// scores are in points (at most 200 per subtask).
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace vilau::eval {

// ---- VQAv2 -----------------------------------------------------------------------------

// vqaEval.py's processPunctuation: each punctuation mark is deleted when it touches a space
// (or the text holds a digit,digit group), otherwise replaced by a space; then periods not
// followed by a digit are deleted.
std::string vqa_process_punctuation(std::string_view text);
// vqaEval.py's processDigitArticle: lower case, number words to digits, articles dropped,
// contractions without apostrophe restored, words joined by single spaces.
std::string vqa_process_digit_article(std::string_view text);
// What vqaEval.py does to a model's answer before matching it.
std::string vqa_normalize_answer(std::string_view answer);

// One question's accuracy in [0, 1]: the mean over the human answers of
// min(1, matches among the other answers / 3).
double vqa_question_accuracy(std::string_view answer, std::vector<std::string> human_answers);

struct VqaV2Truth {
  std::vector<std::string> answers;  // the annotators' answers (10 in VQAv2)
  std::string answer_type;           // "yes/no", "number", "other"; empty when unknown
  std::string question_type;         // e.g. "what color is the"; empty when unknown
};

struct VqaV2Score {
  double accuracy = 0;                           // percent
  std::map<std::string, double> by_answer_type;  // percent
  std::map<std::string, double> by_question_type;
  std::map<std::string, double> per_question;  // question id -> accuracy in [0, 1]
  int64_t count = 0;
  std::vector<std::string> missing;  // ids without an answer; they score 0
};

// `truth` maps question ids to their annotations; `answers` maps ids to model answers.
VqaV2Score score_vqav2(const std::map<std::string, VqaV2Truth>& truth,
                       const std::map<std::string, std::string>& answers);

// ---- POPE ------------------------------------------------------------------------------

// LLaVA's reading of a POPE answer: in its first sentence, commas removed and split at
// spaces, the words "No", "no" or "not" mean no; anything else means yes.
bool pope_answer_is_yes(std::string_view answer);

struct PopeMetrics {
  int64_t tp = 0, fp = 0, tn = 0, fn = 0;
  double accuracy = 0, precision = 0, recall = 0, f1 = 0, yes_ratio = 0;  // percent
};
// From the four counts; a ratio whose denominator is 0 is 0.
PopeMetrics pope_metrics(int64_t tp, int64_t fp, int64_t tn, int64_t fn);

struct PopeItem {
  std::string category;  // adversarial, popular, random (any name works)
  bool label_yes = false;
};

struct PopeScore {
  PopeMetrics all;                                 // every question pooled (lmms-eval's "pope")
  std::map<std::string, PopeMetrics> by_category;  // LLaVA's per-file report
  PopeMetrics category_mean;         // each rate averaged over the categories (counts summed)
  std::vector<std::string> missing;  // unanswered ids, counted as the wrong answer
};

PopeScore score_pope(const std::map<std::string, PopeItem>& items,
                     const std::map<std::string, std::string>& answers);

// ---- MME -------------------------------------------------------------------------------

// calculation.py's reading: lower case; "yes" or "no" as is, otherwise "yes" or "no" found in
// the first four characters (yes first), otherwise "other".
std::string mme_parse_answer(std::string_view answer);

// The ten perception and four cognition subtasks, as calculation.py names them.
const std::vector<std::string>& mme_perception_subtasks();
const std::vector<std::string>& mme_cognition_subtasks();

struct MmeItem {
  std::string category;  // one of the fourteen subtasks
  std::string image;     // the two questions of one image share it
  std::string answer;    // "yes" or "no" (any case)
};

struct MmeSubtaskScore {
  double acc = 0, acc_plus = 0, score = 0;  // acc and acc+ in percent; score = acc + acc+
  int64_t images = 0, questions = 0, other = 0;
};

struct MmeScore {
  std::map<std::string, MmeSubtaskScore> subtasks;
  double perception = 0, cognition = 0, total = 0;  // sums of the subtasks present
  std::vector<std::string> missing;                 // unanswered ids, counted wrong
};

// FormatError when a category is not one of the fourteen, when an image of a subtask does not
// have exactly two questions, or when a ground-truth answer is not yes/no.
MmeScore score_mme(const std::map<std::string, MmeItem>& items,
                   const std::map<std::string, std::string>& answers);

// ---- GQA -------------------------------------------------------------------------------

// LLaVA's conversion of an answer for the GQA evaluator: trailing periods removed, lower case.
std::string gqa_normalize_answer(std::string_view answer);

struct ExactMatchScore {
  double accuracy = 0;                         // percent
  std::map<std::string, double> by_category;   // percent; empty when no category is given
  std::map<std::string, double> per_question;  // id -> 0 or 1
  int64_t count = 0;
  std::vector<std::string> missing;  // ids without an answer; they count as wrong
};

struct GqaItem {
  std::string answer;  // the gold answer, compared as is (the official evaluator does)
  std::string category;
};

ExactMatchScore score_gqa(const std::map<std::string, GqaItem>& items,
                          const std::map<std::string, std::string>& answers);

}  // namespace vilau::eval
