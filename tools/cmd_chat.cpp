// `vilau chat`: questions about images or a video (SPEC §4.3, §4.4), one question from the
// command line or a conversation read line by line from stdin.
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "vilau/core/error.h"
#include "vilau/data/video.h"
#include "vilau/eval/vqa_benchmark.h"
#include "vilau/infer/answering.h"
#include "vilau/infer/runtime.h"
#include "vilau/infer/text_generation.h"
#include "vilau/io/atomic_file.h"
#include "vilau/io/image.h"
#include "vilau/tokenizer/conversation.h"
#include "vilau/vision/preprocess.h"

namespace vilau::cli {

namespace {

struct ChatArgs {
  std::string model, video, question, questions, answers, device = "cpu", dtype = "auto";
  std::vector<std::string> images;
  TextOptions text;
  uint64_t seed = 0;
  int64_t batch = 1;
  bool json = false;
  bool wrap_images = false;
};

// The images, then the video's frames, as the tower's codes [P, h, w, D]; undefined when
// there are none. Encoded once and reused for every turn.
at::Tensor encode_media(const std::vector<at::Tensor>& images, const std::string& video,
                        VilaUImpl& model) {
  const int64_t size = model.config().vision_tower.vision.image_size;
  std::vector<at::Tensor> pixels;
  for (const at::Tensor& rgb : images) {
    pixels.push_back(preprocess_image(rgb, size));
  }
  if (!video.empty()) {
    for (const at::Tensor& frame :
         data::read_video_frames(video, model.config().num_video_frames)) {
      pixels.push_back(preprocess_image(frame, size));
    }
  }
  if (pixels.empty()) return {};
  torch::NoGradGuard no_grad;
  return model.encode_images(at::stack(pixels));
}

void run_chat(const ChatArgs& args) {
  args.text.sampler.validate("--temperature/--top-k/--top-p");
  const at::Device device = parse_device(args.device);
  const at::ScalarType dtype = parse_dtype(args.dtype, device);
  // Images are read before the model loads, so that a wrong path fails at once.
  std::vector<at::Tensor> images;
  for (const std::string& path : args.images) {
    images.push_back(io::read_image_with_alpha(path));
  }
  InferenceModel loaded = load_inference_model(args.model, device, dtype);
  const at::Tensor codes = encode_media(images, args.video, *loaded.model);
  const int64_t placeholders = codes.defined() ? codes.size(0) : 0;
  TextGenerator generator(loaded.model, loaded.tokenizer);
  at::Generator rng = make_generator(device, args.seed);

  std::vector<Turn> turns;
  const auto answer = [&](const std::string& question) {
    // Images go before the first question only, as understanding_prompt() places them.
    std::string message = question;
    for (int64_t i = 0; turns.empty() && i < placeholders; ++i) {
      message.insert(0, image_placeholder(args.wrap_images));
    }
    turns.push_back({message, ""});
    const std::vector<int64_t> ids = loaded.tokenizer.encode_with_images(inference_prompt(turns));
    TextStream stream;
    if (!args.json) {
      stream = [](int64_t, const std::string& piece) {
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
      };
    }
    const TextAnswer a = generator.generate({ids}, codes, args.text, rng, stream).front();
    turns.back().assistant = a.text;
    if (args.json) {
      const nlohmann::json out = {{"question", question},
                                  {"answer", a.text},
                                  {"tokens", a.tokens.size()},
                                  {"stop", stop_reason_name(a.stop)}};
      // A random or undertrained model can emit broken UTF-8; JSON output must stay valid.
      std::printf("%s\n",
                  out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    } else {
      std::printf("\n");
    }
    std::fflush(stdout);
  };

  if (!args.question.empty()) {
    answer(args.question);
    return;
  }
  for (std::string line; std::getline(std::cin, line);) {
    if (line.find_first_not_of(" \t\r") != std::string::npos) answer(line);
  }
}

// Evaluation-style answering: one image and one question per line of a JSONL file (image
// paths relative to the file), answers to a JSONL file ({"id", "answer"}) written
// atomically at the end.
void run_questions(const ChatArgs& args) {
  const std::vector<eval::BenchmarkQuestion> questions = eval::read_vqa_questions(args.questions);
  const std::filesystem::path base = std::filesystem::path(args.questions).parent_path();
  std::vector<ImageQuestion> asked;
  for (const eval::BenchmarkQuestion& q : questions) {
    asked.push_back({(base / q.image).string(), q.text});
  }
  const at::Device device = parse_device(args.device);
  InferenceModel loaded = load_inference_model(args.model, device, parse_dtype(args.dtype, device));
  AnsweringOptions options;
  options.text = args.text;
  options.batch = args.batch;
  options.wrap_images = args.wrap_images;
  options.seed = args.seed;
  std::string out;
  answer_image_questions(loaded, asked, options, [&](size_t i, const TextAnswer& a) {
    out += nlohmann::json({{"id", questions[i].raw_id}, {"answer", a.text}})
               .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
           "\n";
  });
  io::write_file_atomic(args.answers, out);
  std::printf("%s\n", nlohmann::json({{"answers", args.answers}}).dump().c_str());
}

}  // namespace

void add_chat_command(CLI::App& app) {
  auto args = std::make_shared<ChatArgs>();
  CLI::App* chat = app.add_subcommand(
      "chat",
      "Answer questions about images or a video; without --question, read one per line "
      "from stdin as a multi-turn conversation");
  chat->add_option("--model", args->model, "A VILA-U checkpoint folder")->required();
  chat->add_option("--image", args->images, "An image (repeat for several)");
  chat->add_option("--video", args->video,
                   "A video file or folder of frames (num_video_frames sampled uniformly)");
  chat->add_option("--question", args->question, "Answer this one question and exit");
  chat->add_option("--questions", args->questions,
                   "JSONL of {\"id\", \"image\", \"question\"}: answer each (needs --answers)");
  chat->add_option("--answers", args->answers, "With --questions: JSONL of {\"id\", \"answer\"}");
  chat->add_option("--batch", args->batch, "With --questions: questions answered together")
      ->capture_default_str();
  chat->add_flag("--json", args->json, "Print one JSON object per answer instead of streaming");
  chat->add_flag("--wrap-images", args->wrap_images,
                 "Write each image as <im_start><image><im_end>, the form of single-image SFT "
                 "data (the official inference leaves it unwrapped)");
  chat->add_option("--max-new-tokens", args->text.max_new_tokens, "Answer length limit")
      ->capture_default_str();
  chat->add_option("--temperature", args->text.sampler.temperature, "0 is greedy")
      ->capture_default_str();
  chat->add_option("--top-k", args->text.sampler.top_k, "0 disables")->capture_default_str();
  chat->add_option("--top-p", args->text.sampler.top_p, "1 disables")->capture_default_str();
  chat->add_option("--stop", args->text.stop_strings, "Stop before this text (repeatable)");
  chat->add_option("--seed", args->seed, "Sampling seed")->capture_default_str();
  chat->add_option("--device", args->device, "cpu, cuda or cuda:N")->capture_default_str();
  chat->add_option("--dtype", args->dtype, "auto (bf16 on GPU, fp32 on CPU), bf16, fp16, fp32")
      ->capture_default_str();
  chat->callback([args] {
    if (args->questions.empty() != args->answers.empty()) {
      throw ConfigError(
          describe("vilau chat", "--questions and --answers", "both or neither", "only one"));
    }
    if (args->questions.empty()) {
      run_chat(*args);
    } else {
      run_questions(*args);
    }
  });
}

}  // namespace vilau::cli
