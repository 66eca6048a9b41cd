// `vilau init`: a randomly initialised model in the official folder layout.
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "default_corpus.h"
#include "presets.h"
#include "vilau/core/error.h"
#include "vilau/model/init.h"
#include "vilau/model/official_checkpoint.h"
#include "vilau/tokenizer/tokenizer.h"

namespace fs = std::filesystem;

namespace vilau::cli {

void add_init_command(CLI::App& app) {
  CLI::App* init = app.add_subcommand(
      "init", "Write a randomly initialised model in the official folder layout");
  auto preset = std::make_shared<std::string>("tiny");
  auto out = std::make_shared<std::string>();
  auto seed = std::make_shared<uint64_t>(0);
  auto tokenizer = std::make_shared<std::string>();
  auto corpus = std::make_shared<std::string>();
  init->add_option("--preset", *preset, "tiny, 7b-256, 7b-384 or a preset YAML file")
      ->capture_default_str();
  init->add_option("--out", *out, "Output folder")->required();
  init->add_option("--seed", *seed, "Random seed")->capture_default_str();
  init->add_option("--tokenizer", *tokenizer,
                   "A tokenizer folder to copy (e.g. LLaMA-2's with VILA-U's tokens)");
  init->add_option("--corpus", *corpus,
                   "Without --tokenizer: text to train one on (default: the built-in corpus)");
  init->callback([preset, out, seed, tokenizer, corpus] {
    const ModelConfig config = load_preset(*preset);
    const fs::path llm_dir = fs::path(*out) / "llm";
    export_official(*out, config, init_weights(config, *seed));
    if (tokenizer->empty() && !corpus->empty()) {
      train_tokenizer(*corpus, llm_dir.string(), config.llm.vocab_size - 4);
    } else if (tokenizer->empty()) {
      train_default_tokenizer(llm_dir.string(), config.llm.vocab_size - 4);
    } else {
      for (const char* file : {"tokenizer.model", "added_tokens.json", "tokenizer_config.json",
                               "special_tokens_map.json"}) {
        if (fs::exists(fs::path(*tokenizer) / file)) {
          fs::copy_file(fs::path(*tokenizer) / file, llm_dir / file,
                        fs::copy_options::overwrite_existing);
        }
      }
    }
    const Tokenizer t = Tokenizer::load(llm_dir.string());
    if (t.size() != config.llm.vocab_size) {
      throw ShapeError(
          describe(llm_dir.string(), "tokenizer size",
                   "the preset's llm.vocab_size " + std::to_string(config.llm.vocab_size),
                   std::to_string(t.size())));
    }
    std::printf(
        "%s\n",
        nlohmann::json{{"out", *out}, {"preset", config.name}, {"seed", *seed}}.dump().c_str());
  });
}

}  // namespace vilau::cli
