// `vilau eval vqa`: answers a VQA benchmark with a model (resumable) or scores an existing
// answers file (docs/evaluation.md, VQA benchmarks).
#include <spdlog/spdlog.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "vilau/core/error.h"
#include "vilau/eval/jsonl.h"
#include "vilau/eval/vqa_benchmark.h"
#include "vilau/infer/answering.h"
#include "vilau/io/atomic_file.h"

namespace vilau::cli {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct VqaArgs {
  std::string model, answers, questions, image_folder, benchmark = "synth", annotations, out;
  std::string out_dir, suffix, device = "cpu", dtype = "auto";
  int64_t batch = 1, max_new_tokens = 0;
  bool suffix_given = false, max_new_tokens_given = false, wrap_images = false;
};

// "\n", "\t" and "\\" in a command-line value, so that a shell user can write the suffix.
std::string unescape(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\\' || i + 1 == text.size()) {
      out += text[i];
      continue;
    }
    const char next = text[++i];
    out += next == 'n' ? '\n' : next == 't' ? '\t' : next;
  }
  return out;
}

std::string strip(const std::string& text) {
  const size_t begin = text.find_first_not_of(" \t\r\n");
  if (begin == std::string::npos) return "";
  return text.substr(begin, text.find_last_not_of(" \t\r\n") - begin + 1);
}

// The answers of an interrupted run. A line cut short by the interruption is dropped, so the
// file can be appended to again.
std::map<std::string, eval::BenchmarkAnswer> resume_answers(const std::string& path) {
  if (!fs::exists(path)) return {};
  std::string text;
  {
    std::ifstream in(path, std::ios::binary);
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  if (!text.empty() && text.back() != '\n') {
    spdlog::warn("{}: dropping an incomplete last line (interrupted run)", path);
    io::write_file_atomic(path, text.substr(0, text.rfind('\n') + 1));
  }
  return eval::read_benchmark_answers(path);
}

json answer_line(const eval::BenchmarkQuestion& q, const std::string& prompt,
                 const std::string& text) {
  return {{"question_id", q.raw_id}, {"prompt", prompt}, {"text", text}};
}

json run_with_model(const VqaArgs& args, eval::Benchmark benchmark,
                    const std::vector<eval::BenchmarkQuestion>& questions,
                    const eval::BenchmarkTruth& truth) {
  const fs::path folder = args.image_folder.empty() ? fs::path(args.questions).parent_path()
                                                    : fs::path(args.image_folder);
  const std::string suffix =
      args.suffix_given ? unescape(args.suffix) : eval::default_prompt_suffix(benchmark);
  // Every image is checked before the model loads, so that a wrong folder fails at once.
  for (const eval::BenchmarkQuestion& q : questions) {
    if (!fs::is_regular_file(folder / q.image)) {
      throw IoError(describe(q.where, "image '" + q.image + "'", "a file under " + folder.string(),
                             "none at " + (folder / q.image).string()));
    }
  }
  fs::create_directories(args.out);
  const std::string answers_path = (fs::path(args.out) / "answers.jsonl").string();
  std::map<std::string, eval::BenchmarkAnswer> answers = resume_answers(answers_path);
  std::vector<size_t> todo;
  std::vector<ImageQuestion> asked;
  for (size_t i = 0; i < questions.size(); ++i) {
    if (answers.count(questions[i].id) == 0) {
      todo.push_back(i);
      asked.push_back({(folder / questions[i].image).string(),
                       eval::benchmark_prompt(benchmark, questions[i].text, suffix)});
    }
  }
  spdlog::info("{}: {} questions, {} answered before, {} to go", benchmark_name(benchmark),
               questions.size(), questions.size() - todo.size(), todo.size());
  if (!todo.empty()) {
    const at::Device device = parse_device(args.device);
    InferenceModel loaded =
        load_inference_model(args.model, device, parse_dtype(args.dtype, device));
    AnsweringOptions options;
    options.text.sampler = {0.0, 0, 1.0};  // greedy, as the LLaVA and lmms-eval runs are
    options.text.max_new_tokens =
        args.max_new_tokens_given ? args.max_new_tokens : eval::default_max_new_tokens(benchmark);
    options.batch = args.batch;
    options.wrap_images = args.wrap_images;
    std::ofstream append(answers_path, std::ios::app | std::ios::binary);
    if (!append) throw IoError(describe(answers_path, "cannot open for appending"));
    answer_image_questions(loaded, asked, options, [&](size_t k, const TextAnswer& a) {
      // Trimmed as LLaVA's model_vqa_loader trims; a broken UTF-8 byte becomes U+FFFD.
      const json line = answer_line(questions[todo[k]], asked[k].message, strip(a.text));
      append << line.dump(-1, ' ', false, json::error_handler_t::replace) << '\n';
      append.flush();
      if (!append) throw IoError(describe(answers_path, "cannot append an answer"));
    });
  }
  // Rewritten in question order, so that a resumed run ends with the same file.
  answers = eval::read_benchmark_answers(answers_path);
  std::vector<json> ordered;
  for (const eval::BenchmarkQuestion& q : questions) {
    const auto it = answers.find(q.id);
    if (it != answers.end()) ordered.push_back(answer_line(q, it->second.prompt, it->second.text));
  }
  eval::write_jsonl(answers_path, ordered);
  return eval::write_benchmark_outputs(args.out, truth, questions, answers);
}

void run_vqa(const VqaArgs& args) {
  if (args.model.empty() == args.answers.empty()) {
    throw ConfigError(describe("vilau eval vqa", "--model and --answers", "exactly one of them",
                               args.model.empty() ? "neither" : "both"));
  }
  if (!args.model.empty() && args.out.empty()) {
    throw ConfigError(describe("vilau eval vqa --model", "--out", "an output folder", "nothing"));
  }
  const eval::Benchmark benchmark = eval::parse_benchmark(args.benchmark);
  const std::vector<eval::BenchmarkQuestion> questions = eval::read_vqa_questions(args.questions);
  const eval::BenchmarkTruth truth = eval::load_truth(benchmark, questions, args.annotations);
  json metrics;
  if (!args.model.empty()) {
    metrics = run_with_model(args, benchmark, questions, truth);
  } else if (!args.out_dir.empty()) {
    metrics = eval::write_benchmark_outputs(args.out_dir, truth, questions,
                                            eval::read_benchmark_answers(args.answers));
  } else {
    std::map<std::string, std::string> texts;
    for (const auto& [id, a] : eval::read_benchmark_answers(args.answers)) texts[id] = a.text;
    metrics = eval::score_benchmark(truth, questions, texts).metrics;
  }
  if (!args.answers.empty() && !args.out.empty()) {
    io::write_file_atomic(args.out, metrics.dump(2) + "\n");
  }
  std::printf("%s\n", metrics.dump().c_str());
}

}  // namespace

void add_eval_vqa_command(CLI::App& eval) {
  auto args = std::make_shared<VqaArgs>();
  CLI::App* cmd = eval.add_subcommand(
      "vqa",
      "Answer a VQA benchmark with a model (--model, resumable) or score an answers file "
      "(--answers): VQAv2, POPE, MME, GQA or the synthetic world");
  cmd->add_option("--questions", args->questions,
                  "JSONL of {\"question_id\", \"image\", \"text\", \"category\"?, ground truth?}")
      ->required();
  cmd->add_option("--benchmark", args->benchmark, "vqav2, pope, mme, gqa or synth")
      ->capture_default_str();
  cmd->add_option("--annotations", args->annotations,
                  "Ground truth: VQAv2 annotations JSON / JSONL, or {\"question_id\", \"answer\"} "
                  "lines for the others");
  cmd->add_option("--model", args->model, "A VILA-U checkpoint folder: answer every question");
  cmd->add_option("--answers", args->answers,
                  "Score this JSONL of {\"question_id\" or \"id\", \"text\" or \"answer\"}");
  cmd->add_option("--out", args->out,
                  "--model: output folder (answers.jsonl, results.json, lmms_eval_samples.jsonl, "
                  "submission.json); --answers: also write the metrics to this JSON file");
  cmd->add_option("--out-dir", args->out_dir,
                  "--answers: write results.json, lmms_eval_samples.jsonl and (VQAv2) "
                  "submission.json to this folder");
  cmd->add_option("--image-folder", args->image_folder,
                  "Where the questions' image paths start (default: the questions file's folder)");
  cmd->add_option("--batch", args->batch, "Questions answered together")->capture_default_str();
  cmd->add_option("--max-new-tokens", args->max_new_tokens,
                  "Answer length limit (default: 128 for pope, 8 for synth, 16 otherwise)");
  cmd->add_option("--conv-suffix", args->suffix,
                  "Appended to each question (\\n for a newline; default: \"\\nAnswer the "
                  "question using a single word or phrase.\", nothing for synth)");
  cmd->add_flag("--wrap-images", args->wrap_images,
                "Write each image as <im_start><image><im_end> (models trained only on that form)");
  cmd->add_option("--device", args->device, "cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_option("--dtype", args->dtype, "auto (bf16 on GPU, fp32 on CPU), bf16, fp16, fp32")
      ->capture_default_str();
  cmd->callback([args, cmd] {
    VqaArgs a = *args;
    a.suffix_given = cmd->count("--conv-suffix") > 0;
    a.max_new_tokens_given = cmd->count("--max-new-tokens") > 0;
    run_vqa(a);
  });
}

}  // namespace vilau::cli
