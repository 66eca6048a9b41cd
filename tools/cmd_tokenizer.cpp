// `vilau tokenizer train|encode`.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "vilau/core/error.h"
#include "vilau/tokenizer/conversation.h"
#include "vilau/tokenizer/tokenizer.h"

namespace vilau::cli {

namespace {

std::string apply_template(const std::string& name, const std::string& text, int64_t frames) {
  if (name.empty() || name == "none") {
    return text;
  }
  if (name == "understand") {
    return understanding_prompt(text);
  }
  if (name == "video") {
    return video_prompt(text, frames);
  }
  if (name == "t2i") {
    return text_to_image_prompt(text);
  }
  if (name == "t2i-uncond") {
    return text_to_image_unconditional_prompt();
  }
  if (name == "t2v") {
    return text_to_video_prompt(text);
  }
  throw ConfigError(describe("--template", "unknown template",
                             "none, understand, video, t2i, t2i-uncond or t2v", "'" + name + "'"));
}

}  // namespace

void add_tokenizer_command(CLI::App& app) {
  CLI::App* tokenizer =
      app.add_subcommand("tokenizer", "Train SentencePiece tokenizers and encode prompts");
  tokenizer->require_subcommand(1);

  CLI::App* train = tokenizer->add_subcommand(
      "train", "Train a LLaMA-style SentencePiece model plus VILA-U's tokens");
  auto corpus = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto vocab = std::make_shared<int64_t>(32000);
  train->add_option("--corpus", *corpus, "Text file, one sentence per line")->required();
  train->add_option("--out", *out, "Folder for tokenizer.model and the HF tokenizer files")
      ->required();
  train
      ->add_option("--vocab-size", *vocab,
                   "SentencePiece pieces; the four VILA-U tokens come after")
      ->capture_default_str();
  auto template_lines = std::make_shared<int64_t>(0);
  train
      ->add_option("--template-lines", *template_lines,
                   "Also learn from this many copies of the chat template's system prompt")
      ->capture_default_str();
  train->callback([corpus, out, vocab, template_lines] {
    train_tokenizer(*corpus, *out, *vocab, *template_lines);
    const Tokenizer t = Tokenizer::load(*out);
    std::printf("%s\n", nlohmann::json{{"tokenizer", *out},
                                       {"vocab_size", t.size()},
                                       {"im_start", t.token_id("<im_start>")},
                                       {"vi_end", t.token_id("<vi_end>")}}
                            .dump()
                            .c_str());
  });

  CLI::App* encode =
      tokenizer->add_subcommand("encode", "Print the ids of a text or prompt as a JSON list");
  auto dir = std::make_shared<std::string>();
  auto text = std::make_shared<std::string>();
  auto name = std::make_shared<std::string>("none");
  auto frames = std::make_shared<int64_t>(8);
  encode->add_option("--tokenizer", *dir, "A tokenizer folder, e.g. a checkpoint's llm/")
      ->required();
  encode->add_option("--text", *text, "The text, or the user's message with --template");
  encode->add_option("--template", *name, "none, understand, video, t2i, t2i-uncond or t2v")
      ->capture_default_str();
  encode->add_option("--frames", *frames, "Frames of a video prompt")->capture_default_str();
  encode->callback([dir, text, name, frames] {
    const Tokenizer t = Tokenizer::load(*dir);
    std::printf(
        "%s\n",
        nlohmann::json(t.encode_with_images(apply_template(*name, *text, *frames))).dump().c_str());
  });
}

}  // namespace vilau::cli
