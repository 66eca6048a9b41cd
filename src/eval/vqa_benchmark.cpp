#include "vilau/eval/vqa_benchmark.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "vilau/core/error.h"
#include "vilau/core/file.h"
#include "vilau/eval/jsonl.h"
#include "vilau/eval/shape_checker.h"
#include "vilau/io/atomic_file.h"

namespace vilau::eval {

using nlohmann::json;

namespace {

constexpr const char* kShortAnswer = "\nAnswer the question using a single word or phrase.";
// lmms-eval's mme_doc_to_text removes this before appending its own instruction.
constexpr const char* kMmeYesNo = " Please answer yes or no.";

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// A question id as text; ids may be integers (VQAv2, POPE) or strings (GQA, MME).
std::string id_text(const json& row, const std::string& where, json* raw) {
  const char* key = row.contains("question_id") ? "question_id" : "id";
  const auto it = row.find(key);
  if (it == row.end()) {
    throw FormatError(
        describe(where, "key 'question_id'", "an integer or a string (or key 'id')", "nothing"));
  }
  if (raw != nullptr) *raw = *it;
  if (it->is_number_integer()) return it->dump();
  if (it->is_string()) return it->get<std::string>();
  throw FormatError(
      describe(where, std::string("key '") + key + "'", "an integer or a string", it->type_name()));
}

// The string at the first of `keys` that the row has; FormatError naming the first key when
// none is there, or the key found when it is not a string.
std::string first_string(const json& row, std::initializer_list<const char*> keys,
                         const std::string& where) {
  for (const char* key : keys) {
    if (row.contains(key)) return jsonl_string(row, key, where);
  }
  return jsonl_string(row, *keys.begin(), where);
}

std::string optional_string(const json& row, const char* key, const std::string& where) {
  return row.contains(key) ? jsonl_string(row, key, where) : std::string();
}

std::string read_text_file(const std::string& path, const std::string& what) {
  // Benchmark annotation files run to a few hundred MB at most.
  return read_regular_file(path, what, int64_t{4} << 30);
}

// One question's annotations, from the official file or a JSONL line.
VqaV2Truth vqav2_entry(const json& entry, const std::string& where, std::string* target) {
  VqaV2Truth truth;
  const auto answers = entry.find("answers");
  if (answers == entry.end() || !answers->is_array() || answers->empty()) {
    throw FormatError(describe(where, "key 'answers'",
                               "a non-empty list of strings or of {\"answer\": ...}",
                               answers == entry.end() ? "nothing" : answers->dump()));
  }
  for (const json& a : *answers) {
    if (a.is_string()) {
      truth.answers.push_back(a.get<std::string>());
    } else if (a.is_object()) {
      truth.answers.push_back(jsonl_string(a, "answer", where + ": answers[]"));
    } else {
      throw FormatError(
          describe(where, "key 'answers'", "strings or {\"answer\": ...} objects", a.type_name()));
    }
  }
  truth.answer_type = optional_string(entry, "answer_type", where);
  truth.question_type = optional_string(entry, "question_type", where);
  *target = optional_string(entry, "multiple_choice_answer", where);
  if (target->empty()) {
    // The most frequent human answer, the earliest on ties.
    size_t best = 0;
    for (const std::string& a : truth.answers) {
      const auto n = static_cast<size_t>(std::count(truth.answers.begin(), truth.answers.end(), a));
      if (n > best) {
        best = n;
        *target = a;
      }
    }
  }
  return truth;
}

// The official annotations JSON ({"annotations": [...]}) or a JSONL with one question a line.
std::map<std::string, std::pair<VqaV2Truth, std::string>> read_vqav2_annotations(
    const std::string& path) {
  const std::string what =
      "VQAv2 annotations (official JSON or {\"question_id\", \"answers\"} lines)";
  std::map<std::string, std::pair<VqaV2Truth, std::string>> out;
  const auto add = [&](const json& entry, const std::string& where) {
    std::string target;
    VqaV2Truth truth = vqav2_entry(entry, where, &target);
    out[id_text(entry, where, nullptr)] = {std::move(truth), std::move(target)};
  };
  const json whole = json::parse(read_text_file(path, what), nullptr, false);
  if (whole.is_object() && whole.contains("annotations")) {
    const json& list = whole["annotations"];
    if (!list.is_array()) {
      throw FormatError(describe(path, "key 'annotations'", "a list", list.type_name()));
    }
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string where = path + ": annotations[" + std::to_string(i) + "]";
      if (!list[i].is_object()) {
        throw FormatError(describe(where, "entry", "an object", list[i].type_name()));
      }
      add(list[i], where);
    }
    return out;
  }
  for (const JsonlRow& row : read_jsonl_rows(path, what)) {
    add(row.value, path + ":" + std::to_string(row.line));
  }
  return out;
}

// Ground-truth answers of the non-VQAv2 benchmarks from an annotations JSONL.
std::map<std::string, std::string> read_answer_annotations(const std::string& path) {
  std::map<std::string, std::string> out;
  for (const JsonlRow& row :
       read_jsonl_rows(path, "annotations ({\"question_id\", \"answer\"} lines)")) {
    const std::string where = path + ":" + std::to_string(row.line);
    out[id_text(row.value, where, nullptr)] = first_string(row.value, {"answer", "label"}, where);
  }
  return out;
}

std::string yes_no(const std::string& value, const std::string& where, const std::string& key) {
  std::string v;
  for (const char c : value) {
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n') v += static_cast<char>(std::tolower(c));
  }
  if (v != "yes" && v != "no") {
    throw FormatError(describe(where, "key '" + key + "'", "yes or no", "'" + value + "'"));
  }
  return v;
}

json pope_json(const PopeMetrics& m) {
  return {{"accuracy", m.accuracy},
          {"precision", m.precision},
          {"recall", m.recall},
          {"f1", m.f1},
          {"yes_ratio", m.yes_ratio},
          {"tp", m.tp},
          {"fp", m.fp},
          {"tn", m.tn},
          {"fn", m.fn}};
}

void write_json(const std::string& path, const json& value) {
  io::write_file_atomic(path, value.dump(2, ' ', false, json::error_handler_t::replace) + "\n");
}

}  // namespace

Benchmark parse_benchmark(const std::string& name) {
  for (const Benchmark b :
       {Benchmark::vqav2, Benchmark::pope, Benchmark::mme, Benchmark::gqa, Benchmark::synth}) {
    if (name == benchmark_name(b)) return b;
  }
  throw ConfigError(
      describe("--benchmark", "unknown benchmark", "vqav2, pope, mme, gqa or synth", name));
}

const char* benchmark_name(Benchmark benchmark) {
  switch (benchmark) {
    case Benchmark::vqav2:
      return "vqav2";
    case Benchmark::pope:
      return "pope";
    case Benchmark::mme:
      return "mme";
    case Benchmark::gqa:
      return "gqa";
    case Benchmark::synth:
      break;
  }
  return "synth";
}

std::string default_prompt_suffix(Benchmark benchmark) {
  return benchmark == Benchmark::synth ? "" : kShortAnswer;
}

int64_t default_max_new_tokens(Benchmark benchmark) {
  switch (benchmark) {
    case Benchmark::pope:
      return 128;
    case Benchmark::synth:
      return 8;
    default:
      return 16;
  }
}

std::string benchmark_prompt(Benchmark benchmark, const std::string& question,
                             const std::string& suffix) {
  if (suffix.empty() || ends_with(question, suffix)) return question;
  std::string prompt = question;
  if (benchmark == Benchmark::mme) {
    const std::string yes_no_hint = kMmeYesNo;
    for (size_t at; (at = prompt.find(yes_no_hint)) != std::string::npos;) {
      prompt.erase(at, yes_no_hint.size());
    }
  }
  return prompt + suffix;
}

std::vector<BenchmarkQuestion> read_vqa_questions(const std::string& path) {
  std::vector<BenchmarkQuestion> questions;
  std::map<std::string, size_t> lines;
  for (JsonlRow& row : read_jsonl_rows(
           path, "benchmark questions ({\"question_id\", \"image\", \"text\"} lines)")) {
    BenchmarkQuestion q;
    q.where = path + ":" + std::to_string(row.line);
    q.id = id_text(row.value, q.where, &q.raw_id);
    q.image = jsonl_string(row.value, "image", q.where);
    q.text = first_string(row.value, {"text", "question"}, q.where);
    q.category = optional_string(row.value, "category", q.where);
    const auto [it, fresh] = lines.emplace(q.id, row.line);
    if (!fresh) {
      throw FormatError(describe(q.where, "question_id '" + q.id + "'", "unique ids",
                                 "also at line " + std::to_string(it->second)));
    }
    q.row = std::move(row.value);
    questions.push_back(std::move(q));
  }
  return questions;
}

BenchmarkTruth load_truth(Benchmark benchmark, const std::vector<BenchmarkQuestion>& questions,
                          const std::string& annotations) {
  BenchmarkTruth truth;
  truth.benchmark = benchmark;
  if (benchmark == Benchmark::vqav2) {
    if (annotations.empty()) return truth;
    const auto all = read_vqav2_annotations(annotations);
    for (const BenchmarkQuestion& q : questions) {
      const auto it = all.find(q.id);
      if (it == all.end()) {
        throw FormatError(describe(q.where, "question_id " + q.id,
                                   "an entry in the annotations " + annotations, "none"));
      }
      truth.vqav2[q.id] = it->second.first;
      truth.targets[q.id] = it->second.second;
    }
    truth.available = true;
    return truth;
  }
  const std::map<std::string, std::string> external = annotations.empty()
                                                          ? std::map<std::string, std::string>{}
                                                          : read_answer_annotations(annotations);
  // POPE's label files call the ground truth "label", lmms-eval's dataset "answer".
  const std::vector<const char*> keys = benchmark == Benchmark::pope
                                            ? std::vector<const char*>{"label", "answer"}
                                            : std::vector<const char*>{"answer"};
  const char* key = keys.front();
  const auto answer_of = [&](const BenchmarkQuestion& q, std::string* answer) {
    if (!annotations.empty()) {
      const auto it = external.find(q.id);
      if (it != external.end()) *answer = it->second;
      return it != external.end();
    }
    for (const char* k : keys) {
      if (q.row.contains(k)) {
        *answer = jsonl_string(q.row, k, q.where);
        return true;
      }
    }
    return false;
  };
  std::string answer;
  size_t with = 0;
  for (const BenchmarkQuestion& q : questions) with += answer_of(q, &answer);
  if (with == 0 && annotations.empty()) return truth;
  for (const BenchmarkQuestion& q : questions) {
    if (!answer_of(q, &answer)) {
      throw FormatError(describe(
          annotations.empty() ? q.where : annotations + " (question_id " + q.id + ")",
          std::string("key '") + key + "'",
          "ground truth for every question or for none (scores need all of them)", "nothing"));
    }
    truth.targets[q.id] = answer;
    switch (benchmark) {
      case Benchmark::pope:
        truth.pope[q.id] = {q.category, yes_no(answer, q.where, key) == "yes"};
        break;
      case Benchmark::mme:
        if (q.category.empty()) {
          throw FormatError(describe(q.where, "key 'category'", "the MME subtask", "nothing"));
        }
        truth.mme[q.id] = {q.category, q.image, answer};
        break;
      case Benchmark::gqa:
        truth.gqa[q.id] = {answer, q.category};
        break;
      default:
        truth.synth.push_back(
            {q.id, q.image, q.text, answer, optional_string(q.row, "kind", q.where)});
    }
  }
  truth.available = true;
  return truth;
}

std::map<std::string, BenchmarkAnswer> read_benchmark_answers(const std::string& path) {
  std::map<std::string, BenchmarkAnswer> answers;
  for (const JsonlRow& row : read_jsonl_rows(path, "answers ({\"question_id\", \"text\"} lines)")) {
    const std::string where = path + ":" + std::to_string(row.line);
    answers[id_text(row.value, where, nullptr)] = {
        first_string(row.value, {"text", "answer"}, where),
        optional_string(row.value, "prompt", where)};
  }
  return answers;
}

BenchmarkScore score_benchmark(const BenchmarkTruth& truth,
                               const std::vector<BenchmarkQuestion>& questions,
                               const std::map<std::string, std::string>& answers) {
  BenchmarkScore s;
  json& m = s.metrics;
  m["benchmark"] = benchmark_name(truth.benchmark);
  m["count"] = questions.size();
  size_t answered = 0;
  for (const BenchmarkQuestion& q : questions) answered += answers.count(q.id);
  m["answered"] = answered;
  if (!truth.available) return s;
  std::map<std::string, json> raw_ids;
  for (const BenchmarkQuestion& q : questions) raw_ids[q.id] = q.raw_id;
  const auto raw_id = [&](const std::string& id) { return raw_ids.at(id); };
  switch (truth.benchmark) {
    case Benchmark::vqav2: {
      const VqaV2Score v = score_vqav2(truth.vqav2, answers);
      m["accuracy"] = v.accuracy;
      m["by_answer_type"] = v.by_answer_type;
      if (!v.by_question_type.empty()) m["by_question_type"] = v.by_question_type;
      m["missing"] = v.missing;
      for (const auto& [id, acc] : v.per_question) s.per_sample[id] = {{"exact_match", acc}};
      break;
    }
    case Benchmark::pope: {
      const PopeScore p = score_pope(truth.pope, answers);
      m["all"] = pope_json(p.all);
      for (const auto& [name, c] : p.by_category) m["by_category"][name] = pope_json(c);
      if (!p.by_category.empty()) m["category_mean"] = pope_json(p.category_mean);
      m["missing"] = p.missing;
      for (const auto& [id, item] : truth.pope) {
        const auto it = answers.find(id);
        if (it == answers.end()) continue;
        const bool yes = pope_answer_is_yes(it->second);
        s.per_sample[id] = {{"pope_accuracy",
                             {{"question_id", raw_id(id)},
                              {"score", yes == item.label_yes ? 1.0 : 0.0},
                              {"prediction", yes ? "yes" : "no"},
                              {"ground_truth", item.label_yes ? "yes" : "no"}}}};
      }
      break;
    }
    case Benchmark::mme: {
      const MmeScore mme = score_mme(truth.mme, answers);
      m["perception"] = mme.perception;
      m["cognition"] = mme.cognition;
      m["total"] = mme.total;
      for (const auto& [name, t] : mme.subtasks) {
        m["subtasks"][name] = {
            {"acc", t.acc},       {"acc_plus", t.acc_plus},   {"score", t.score},
            {"images", t.images}, {"questions", t.questions}, {"other", t.other}};
      }
      m["missing"] = mme.missing;
      const auto& perception = mme_perception_subtasks();
      for (const auto& [id, item] : truth.mme) {
        const auto it = answers.find(id);
        if (it == answers.end()) continue;
        const std::string predicted = mme_parse_answer(it->second);
        const bool is_perception =
            std::find(perception.begin(), perception.end(), item.category) != perception.end();
        s.per_sample[id] = {
            {is_perception ? "mme_perception_score" : "mme_cognition_score",
             {{"question_id", raw_id(id)},
              {"category", item.category},
              {"prediction", predicted},
              {"score",
               predicted == yes_no(item.answer, "MME question " + id, "answer") ? 1.0 : 0.0}}}};
      }
      break;
    }
    case Benchmark::gqa: {
      const ExactMatchScore g = score_gqa(truth.gqa, answers);
      m["accuracy"] = g.accuracy;
      if (!g.by_category.empty()) m["by_category"] = g.by_category;
      m["missing"] = g.missing;
      for (const auto& [id, ok] : g.per_question) s.per_sample[id] = {{"exact_match", ok}};
      break;
    }
    case Benchmark::synth: {
      // The demo's own scorer and keys (fractions, not percent), as `vilau demo` reports them.
      const VqaScore v = vqa_accuracy(answers, truth.synth);
      m["vqa_accuracy"] = v.accuracy;
      m["by_kind"] = v.by_kind;
      m["missing"] = v.missing;
      for (const EvalQuestion& q : truth.synth) {
        const auto it = answers.find(q.id);
        if (it == answers.end()) continue;
        const bool ok = normalize_answer(it->second) == normalize_answer(q.answer);
        s.per_sample[q.id] = {{"exact_match", ok ? 1.0 : 0.0}};
      }
      break;
    }
  }
  return s;
}

json vqav2_submission(const std::vector<BenchmarkQuestion>& questions,
                      const std::map<std::string, std::string>& answers) {
  json out = json::array();
  for (const BenchmarkQuestion& q : questions) {
    const bool digits = !q.id.empty() && q.id.find_first_not_of("0123456789") == std::string::npos;
    if (!digits || q.id.size() > 18) {
      throw FormatError(describe(q.where, "question_id '" + q.id + "'",
                                 "a non-negative integer (EvalAI's VQAv2 submission format)"));
    }
    const auto it = answers.find(q.id);
    out.push_back({{"question_id", std::stoll(q.id)},
                   {"answer", it == answers.end() ? "" : vqa_normalize_answer(it->second)}});
  }
  return out;
}

std::vector<json> lmms_eval_samples(const std::vector<BenchmarkQuestion>& questions,
                                    const std::map<std::string, BenchmarkAnswer>& answers,
                                    const BenchmarkTruth& truth, const BenchmarkScore& score) {
  std::vector<json> rows;
  for (size_t i = 0; i < questions.size(); ++i) {
    const BenchmarkQuestion& q = questions[i];
    const auto a = answers.find(q.id);
    if (a == answers.end()) continue;
    json row = {{"doc_id", i},
                {"question_id", q.raw_id},
                {"input", a->second.prompt.empty() ? q.text : a->second.prompt},
                {"resps", json::array({json::array({a->second.text})})},
                {"filtered_resps", json::array({a->second.text})}};
    const auto target = truth.targets.find(q.id);
    if (target != truth.targets.end()) row["target"] = target->second;
    const auto metrics = score.per_sample.find(q.id);
    if (metrics != score.per_sample.end()) row.update(metrics->second);
    rows.push_back(std::move(row));
  }
  return rows;
}

json write_benchmark_outputs(const std::string& dir, const BenchmarkTruth& truth,
                             const std::vector<BenchmarkQuestion>& questions,
                             const std::map<std::string, BenchmarkAnswer>& answers) {
  std::map<std::string, std::string> texts;
  for (const auto& [id, a] : answers) texts[id] = a.text;
  const BenchmarkScore score = score_benchmark(truth, questions, texts);
  std::filesystem::create_directories(dir);
  const std::filesystem::path out(dir);
  if (truth.benchmark == Benchmark::vqav2) {
    write_json((out / "submission.json").string(), vqav2_submission(questions, texts));
  }
  write_jsonl((out / "lmms_eval_samples.jsonl").string(),
              lmms_eval_samples(questions, answers, truth, score));
  write_json((out / "results.json").string(), score.metrics);
  return score.metrics;
}

}  // namespace vilau::eval
