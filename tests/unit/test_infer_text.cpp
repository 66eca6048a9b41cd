// Understanding answers on the tiny model: stopping on EOS, on the token limit and on stop
// strings, streaming, the KV cache against recomputation, padding in batches, and video.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>

#include "test_util.h"
#include "vilau/config.h"
#include "vilau/core/error.h"
#include "vilau/data/video.h"
#include "vilau/infer/outputs.h"
#include "vilau/infer/text_generation.h"
#include "vilau/tokenizer/conversation.h"
#include "vilau/tokenizer/tokenizer.h"
#include "vilau/vision/preprocess.h"

namespace vilau {
namespace {

namespace fs = std::filesystem;

const TextOptions kGreedy{{0.0, 0, 1.0}, 512, {}, true};

class InferText : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    train_tokenizer(VILAU_SOURCE_DIR "/tests/reference/data/corpus.txt", dir().string(), 512);
    tokenizer_ = std::make_unique<Tokenizer>(Tokenizer::load(dir().string()));
  }
  static void TearDownTestSuite() {
    tokenizer_.reset();
    fs::remove_all(dir());
  }
  // ctest runs each test in its own process, all at once: a shared folder let one process
  // delete or rewrite the tokenizer another was loading, and gtest then skipped its tests.
  static fs::path dir() {
    return fs::temp_directory_path() / ("vilau_infer_text_tokenizer_" + std::to_string(::getpid()));
  }

  void SetUp() override {
    torch::manual_seed(0);
    model_ = VilaU(*load_run_config(VILAU_SOURCE_DIR "/configs/presets/tiny.yaml").model);
    model_->eval();
  }

  // Makes the LLM a lookup table: with the attention and MLP outputs zeroed, the final
  // hidden state is the normalised embedding of the last token, so lm_head rows chosen
  // below decide each next token. Greedy decoding then follows chain[0] -> chain[1] ->
  // ... -> EOS.
  void force_chain(const std::vector<int64_t>& chain) {
    torch::NoGradGuard no_grad;
    LlamaForCausalLMImpl& llm = *model_->llm;
    for (const auto& p : llm.named_parameters()) {
      if (p.key().find("o_proj") != std::string::npos ||
          p.key().find("down_proj") != std::string::npos) {
        p.value().zero_();
      }
    }
    at::Tensor embed = llm.model->embed_tokens->weight, head = llm.lm_head->weight;
    head.zero_();
    for (size_t i = 0; i < chain.size(); ++i) {
      const auto axis = static_cast<int64_t>(i);
      embed[chain[i]].zero_();
      embed[chain[i]][axis] = 1.0;
      const int64_t next = i + 1 < chain.size() ? chain[i + 1] : tokenizer_->eos_id();
      head[next].zero_();
      head[next][axis] = 10.0;
    }
  }

  std::vector<TextAnswer> answer(const std::vector<std::vector<int64_t>>& prompts,
                                 const TextOptions& options, const at::Tensor& images = {},
                                 const TextStream& stream = {}) {
    TextGenerator generator(model_, *tokenizer_);
    at::Generator rng = make_generator(at::kCPU, 0);
    return generator.generate(prompts, images, options, rng, stream);
  }

  static std::unique_ptr<Tokenizer> tokenizer_;
  VilaU model_{nullptr};
};

std::unique_ptr<Tokenizer> InferText::tokenizer_;

TEST_F(InferText, StopsAtEos) {
  const std::vector<int64_t> chain = {300, 301, 302, 303, 304};
  force_chain(chain);
  const std::vector<TextAnswer> a = answer({{1, 50, 300}}, kGreedy);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].tokens, std::vector<int64_t>({301, 302, 303, 304}));
  EXPECT_EQ(a[0].stop, StopReason::eos);
  EXPECT_EQ(a[0].text, tokenizer_->decode(a[0].tokens, true));

  TextOptions short_answer = kGreedy;
  short_answer.max_new_tokens = 2;
  const TextAnswer b = answer({{1, 50, 300}}, short_answer).front();
  EXPECT_EQ(b.tokens, std::vector<int64_t>({301, 302}));
  EXPECT_EQ(b.stop, StopReason::length);
}

TEST_F(InferText, StopStringsCutTheAnswerAndStreamingAddsUp) {
  force_chain({300, 301, 302, 303, 304});
  const std::string full = tokenizer_->decode({301, 302, 303, 304}, true);
  std::string stop = tokenizer_->decode({303}, true);
  stop = stop.substr(stop.find_first_not_of(' '));
  ASSERT_FALSE(stop.empty());
  TextOptions options = kGreedy;
  options.stop_strings = {stop};
  std::string streamed;
  const TextAnswer a =
      answer({{1, 50, 300}}, options, {}, [&](int64_t row, const std::string& piece) {
        EXPECT_EQ(row, 0);
        streamed += piece;
      }).front();
  EXPECT_EQ(a.stop, StopReason::stop_string);
  EXPECT_EQ(a.text, full.substr(0, full.find(stop)));
  EXPECT_EQ(streamed, a.text);
}

TEST_F(InferText, RowsOfABatchStopOnTheirOwn) {
  force_chain({300, 301, 302, 303});
  const std::vector<TextAnswer> a = answer({{1, 50, 51, 52, 301}, {1, 300}}, kGreedy);
  EXPECT_EQ(a[0].tokens, std::vector<int64_t>({302, 303}));
  EXPECT_EQ(a[1].tokens, std::vector<int64_t>({301, 302, 303}));
  EXPECT_EQ(a[0].stop, StopReason::eos);
}

TEST_F(InferText, CacheEqualsRecomputationAndPaddingChangesNothing) {
  TextOptions options = kGreedy;
  options.max_new_tokens = 12;
  const std::vector<int64_t> prompt = {1, 80, 81, 82, 83};
  const std::vector<TextAnswer> batched = answer({prompt, {1, 90}}, options);
  options.kv_cache = false;
  const std::vector<TextAnswer> recomputed = answer({prompt, {1, 90}}, options);
  EXPECT_EQ(batched[0].tokens, recomputed[0].tokens);
  EXPECT_EQ(batched[1].tokens, recomputed[1].tokens);
  options.kv_cache = true;
  EXPECT_EQ(answer({{1, 90}}, options)[0].tokens, batched[1].tokens);
  EXPECT_EQ(batched[0].tokens.size(), 12u);
}

TEST_F(InferText, AnswersAboutAVideoFile) {
  const fs::path video = fs::temp_directory_path() / "vilau_infer_clip.avi";
  const at::Tensor frames = at::randint(0, 256, {5, 32, 48, 3}, at::kByte);
  write_video(video.string(), frames);
  const int64_t n = model_->config().num_video_frames;
  std::vector<at::Tensor> pixels;
  for (const at::Tensor& f : data::read_video_frames(video.string(), n)) {
    pixels.push_back(preprocess_image(f, 32));
  }
  fs::remove(video);
  ASSERT_EQ(static_cast<int64_t>(pixels.size()), n);
  const std::vector<int64_t> ids = tokenizer_->encode_with_images(video_prompt("What happens?", n));
  TextOptions options = kGreedy;
  options.max_new_tokens = 4;
  const TextAnswer a = answer({ids}, options, at::stack(pixels)).front();
  EXPECT_FALSE(a.tokens.empty());
}

TEST_F(InferText, RefusesPromptsLongerThanTheContext) {
  std::vector<int64_t> ids = {1, kImageTokenIndex};
  ids.resize(512 - 16 + 1, 7);  // 497 tokens, 16 for the image: the context is full
  EXPECT_THAT(testing::error_of<ShapeError>([&] { answer({ids}, kGreedy); }),
              ::testing::HasSubstr("prompt longer than the context"));
}

}  // namespace
}  // namespace vilau
