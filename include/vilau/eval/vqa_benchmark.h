#pragma once
// The files of `vilau eval vqa` (docs/evaluation.md, VQA benchmarks): benchmark questions in JSONL
// (LLaVA-eval style), ground truth per benchmark, answers, and the outputs (scores, a VQAv2
// submission for EvalAI, lmms-eval-style samples).
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "vilau/eval/synthetic_world.h"
#include "vilau/eval/vqa_scoring.h"

namespace vilau::eval {

enum class Benchmark { vqav2, pope, mme, gqa, synth };

// ConfigError naming --benchmark for an unknown name.
Benchmark parse_benchmark(const std::string& name);
const char* benchmark_name(Benchmark benchmark);

// What VILA-U's evaluation (lmms-eval tasks vqav2, gqa, pope, mme) appends to each question:
// "\nAnswer the question using a single word or phrase."; nothing for the synthetic world.
std::string default_prompt_suffix(Benchmark benchmark);
// lmms-eval's max_new_tokens of those tasks: 128 for POPE, 16 otherwise (8 for synth).
int64_t default_max_new_tokens(Benchmark benchmark);

// The user message: `question`, then `suffix` unless the question already ends with it (LLaVA's
// question files carry it). For MME a suffix replaces the " Please answer yes or no." that
// the questions end with, as lmms-eval does.
std::string benchmark_prompt(Benchmark benchmark, const std::string& question,
                             const std::string& suffix);

struct BenchmarkQuestion {
  std::string id;         // question_id as text: what joins answers and ground truth
  nlohmann::json raw_id;  // as written (an integer or a string), echoed in the outputs
  std::string image;      // as written, relative to the image folder
  std::string text;
  std::string category;  // empty when absent
  nlohmann::json row;    // the whole line, for benchmark-specific keys
  std::string where;     // "path:line"
};

// JSONL lines {"question_id" (or "id"), "image", "text" (or "question"), "category"?}.
// FormatError naming path:line and the key for a missing or mistyped key or a repeated id.
std::vector<BenchmarkQuestion> read_vqa_questions(const std::string& path);

struct BenchmarkTruth {
  Benchmark benchmark = Benchmark::synth;
  bool available = false;  // false: answers can be written but not scored
  std::map<std::string, VqaV2Truth> vqav2;
  std::map<std::string, PopeItem> pope;
  std::map<std::string, MmeItem> mme;
  std::map<std::string, GqaItem> gqa;
  std::vector<EvalQuestion> synth;
  std::map<std::string, std::string> targets;  // id -> the reference answer shown in samples
};

// Ground truth for `questions`. VQAv2: `annotations` is the official annotations JSON or a
// JSONL of {"question_id", "answers": [...], "answer_type"?}. Others: the question lines'
// "answer" ("label" for POPE), or a JSONL `annotations` of {"question_id", "answer"}.
// Either every question has ground truth or none has (FormatError naming the first one
// without); no annotations file and no answers in the questions means none.
BenchmarkTruth load_truth(Benchmark benchmark, const std::vector<BenchmarkQuestion>& questions,
                          const std::string& annotations);

struct BenchmarkAnswer {
  std::string text;
  std::string prompt;  // the message the model saw; empty when the file does not say
};

// JSONL lines {"question_id" (or "id"), "text" (or "answer"), "prompt"?}: what
// `vilau eval vqa --model`, `vilau chat --questions` and LLaVA's model_vqa_loader write.
std::map<std::string, BenchmarkAnswer> read_benchmark_answers(const std::string& path);

struct BenchmarkScore {
  nlohmann::json metrics;                            // results.json
  std::map<std::string, nlohmann::json> per_sample;  // id -> lmms-eval's per-sample metric keys
};

// Scores `answers` (id -> text); metrics say "scored": false when there is no ground truth.
BenchmarkScore score_benchmark(const BenchmarkTruth& truth,
                               const std::vector<BenchmarkQuestion>& questions,
                               const std::map<std::string, std::string>& answers);

// EvalAI's VQAv2 format, [{"question_id": int, "answer": str}] with answers normalised as
// vqaEval.py does, "" for unanswered questions; FormatError for an id that is not an integer.
nlohmann::json vqav2_submission(const std::vector<BenchmarkQuestion>& questions,
                                const std::map<std::string, std::string>& answers);

// One lmms-eval logged sample per answered question: doc_id (index in the question file),
// question_id, input (the prompt), target, resps [[answer]], filtered_resps [answer] and the
// task's per-sample metric keys.
std::vector<nlohmann::json> lmms_eval_samples(const std::vector<BenchmarkQuestion>& questions,
                                              const std::map<std::string, BenchmarkAnswer>& answers,
                                              const BenchmarkTruth& truth,
                                              const BenchmarkScore& score);

// Writes `dir`/results.json, `dir`/lmms_eval_samples.jsonl and, for VQAv2,
// `dir`/submission.json; returns the metrics.
nlohmann::json write_benchmark_outputs(const std::string& dir, const BenchmarkTruth& truth,
                                       const std::vector<BenchmarkQuestion>& questions,
                                       const std::map<std::string, BenchmarkAnswer>& answers);

}  // namespace vilau::eval
