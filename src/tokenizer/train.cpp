// Our own SentencePiece models, for the demo and for custom data: LLaMA's training
// settings, then VILA-U's four added tokens in the files HF transformers writes.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "vilau/core/error.h"
#include "vilau/io/atomic_file.h"
#include "vilau/tokenizer/conversation.h"
#include "vilau/tokenizer/tokenizer.h"

namespace fs = std::filesystem;

namespace vilau {

void train_tokenizer(const std::string& corpus, const std::string& out_dir, int64_t vocab_size,
                     int64_t template_lines) {
  if (!fs::is_regular_file(corpus)) {
    throw IoError(describe(corpus, "cannot read the training corpus",
                           "a text file, one sentence per line", "no such file"));
  }
  fs::create_directories(out_dir);
  const std::string prefix = (fs::path(out_dir) / "tokenizer").string();
  std::string inputs = corpus;
  const fs::path template_corpus = fs::path(out_dir) / "system_prompt_corpus.txt";
  if (template_lines > 0) {
    std::string lines;
    for (int64_t i = 0; i < template_lines; ++i) {
      lines += std::string(kSystemPrompt) + "\n";
    }
    io::write_file_atomic(template_corpus.string(), lines);
    inputs += "," + template_corpus.string();
  }
  const auto status = sentencepiece::SentencePieceTrainer::Train(
      "--input=" + inputs + " --model_prefix=" + prefix +
      " --vocab_size=" + std::to_string(vocab_size) +
      " --model_type=bpe --character_coverage=1.0 --byte_fallback=true --split_digits=true"
      " --normalization_rule_name=identity --remove_extra_whitespaces=false --add_dummy_prefix=true"
      " --allow_whitespace_only_pieces=true --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1"
      " --input_sentence_size=0 --shuffle_input_sentence=false --num_threads=1 --minloglevel=2");
  if (!status.ok()) {
    throw FormatError(describe(corpus, "SentencePiece training failed", {}, status.ToString()));
  }
  fs::remove(template_corpus);
  fs::remove(prefix + ".vocab");  // HF folders carry only the model

  const nlohmann::json specials = {"<im_start>", "<im_end>", "<vi_start>", "<vi_end>"};
  nlohmann::json added = nlohmann::json::object();
  auto token = [](const std::string& content) {
    return nlohmann::json{{"content", content}, {"lstrip", false},      {"normalized", false},
                          {"rstrip", false},    {"single_word", false}, {"special", true}};
  };
  nlohmann::json decoder = {{"0", token("<unk>")}, {"1", token("<s>")}, {"2", token("</s>")}};
  for (size_t i = 0; i < specials.size(); ++i) {
    const int64_t id = vocab_size + static_cast<int64_t>(i);
    added[specials[i].get<std::string>()] = id;
    decoder[std::to_string(id)] = token(specials[i]);
  }
  const nlohmann::json config = {{"add_bos_token", true},
                                 {"add_eos_token", false},
                                 {"added_tokens_decoder", decoder},
                                 {"additional_special_tokens", specials},
                                 {"bos_token", "<s>"},
                                 {"clean_up_tokenization_spaces", false},
                                 {"eos_token", "</s>"},
                                 {"legacy", false},
                                 {"pad_token", "<unk>"},
                                 {"padding_side", "right"},
                                 {"sp_model_kwargs", nlohmann::json::object()},
                                 {"tokenizer_class", "LlamaTokenizer"},
                                 {"unk_token", "<unk>"}};
  const nlohmann::json special_map = {{"additional_special_tokens", specials},
                                      {"bos_token", "<s>"},
                                      {"eos_token", "</s>"},
                                      {"pad_token", "<unk>"},
                                      {"unk_token", "<unk>"}};
  const fs::path dir(out_dir);
  io::write_file_atomic((dir / "added_tokens.json").string(), added.dump(2) + "\n");
  io::write_file_atomic((dir / "tokenizer_config.json").string(), config.dump(2) + "\n");
  io::write_file_atomic((dir / "special_tokens_map.json").string(), special_map.dump(2) + "\n");
}

}  // namespace vilau
