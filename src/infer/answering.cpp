#include "vilau/infer/answering.h"

#include <torch/torch.h>

#include <algorithm>

#include "vilau/core/error.h"
#include "vilau/core/progress.h"
#include "vilau/io/image.h"
#include "vilau/tokenizer/conversation.h"
#include "vilau/vision/preprocess.h"

namespace vilau {

std::string image_placeholder(bool wrap) {
  return wrap ? "<im_start><image><im_end>\n" : "<image>\n";
}

void answer_image_questions(InferenceModel& model, const std::vector<ImageQuestion>& questions,
                            const AnsweringOptions& options, const AnswerSink& sink) {
  if (options.batch < 1) {
    throw ConfigError(
        describe("--batch", "batch size", "at least 1", std::to_string(options.batch)));
  }
  options.text.sampler.validate("--temperature/--top-k/--top-p");
  const at::Device device = model.model->parameters().front().device();
  const int64_t size = model.model->config().vision_tower.vision.image_size;
  TextGenerator generator(model.model, model.tokenizer);
  ProgressBar bar("answering", static_cast<int64_t>(questions.size()), "question", 0,
                  options.progress);
  const auto batch = static_cast<size_t>(options.batch);
  for (size_t first = 0; first < questions.size(); first += batch) {
    const size_t end = std::min(questions.size(), first + batch);
    std::vector<at::Tensor> pixels;
    std::vector<std::vector<int64_t>> prompts;
    for (size_t i = first; i < end; ++i) {
      pixels.push_back(preprocess_image(io::read_image_with_alpha(questions[i].image), size));
      prompts.push_back(model.tokenizer.encode_with_images(
          inference_prompt({{image_placeholder(options.wrap_images) + questions[i].message, ""}})));
    }
    const at::Tensor codes = model.model->encode_images(at::stack(pixels));
    at::Generator rng = make_generator(device, options.seed + first);
    const std::vector<TextAnswer> answers =
        generator.generate(prompts, codes, options.text, rng, {});
    for (size_t i = first; i < end; ++i) {
      sink(i, answers[i - first]);
    }
    bar.update(static_cast<int64_t>(end));
  }
  bar.finish();
}

}  // namespace vilau
