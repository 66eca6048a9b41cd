#pragma once
// The VILA-U text tokenizer: LLaMA's SentencePiece model driven exactly like HF's slow
// LlamaTokenizer(legacy=False) in transformers 4.36 (SPEC §5.5), with VILA-U's added
// tokens <im_start> <im_end> <vi_start> <vi_end>.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace vilau {

// The id that stands for an image in a token sequence; the model replaces it by the
// image's embeddings (tokenizer_image_token in the official code).
inline constexpr int64_t kImageTokenIndex = -200;
// Labels that take no part in the loss.
inline constexpr int64_t kIgnoreIndex = -100;

class Tokenizer {
 public:
  // Loads a checkpoint's llm/ folder (or any HF LLaMA tokenizer folder): tokenizer.model,
  // added_tokens.json, and, when present, tokenizer_config.json and
  // special_tokens_map.json. IoError/FormatError naming the file for anything missing or
  // corrupt, including a VILA-U token absent from added_tokens.json.
  static Tokenizer load(const std::string& dir);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // tokenizer(text).input_ids: BOS (when the config asks for it) then the text's ids.
  std::vector<int64_t> encode(const std::string& text, bool add_special_tokens = true) const;
  // tokenizer_image_token: each "<image>" becomes kImageTokenIndex.
  std::vector<int64_t> encode_with_images(const std::string& text) const;
  // The pieces encode() maps to ids, without BOS.
  std::vector<std::string> tokenize(const std::string& text) const;
  // tokenizer.decode(ids, skip_special_tokens); kImageTokenIndex is not allowed here.
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const;

  int64_t bos_id() const;
  int64_t eos_id() const;
  int64_t pad_id() const;
  int64_t unk_id() const;
  // Id of an added or special token such as "<im_start>"; FormatError if there is none.
  int64_t token_id(const std::string& token) const;
  // Text vocabulary including the added tokens (len(tokenizer) in HF).
  int64_t size() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Trains a SentencePiece model with LLaMA's settings (BPE, byte fallback, split digits,
// identity normalisation) on a text file, one sentence per line, writing
// `out_dir/tokenizer.model`, then adds the VILA-U tokens after the base vocabulary in
// `out_dir/added_tokens.json`, `tokenizer_config.json` and `special_tokens_map.json`, so
// that Tokenizer::load(out_dir) works and HF transformers reads the folder too.
// template_lines > 0 adds that many copies of the chat template's system prompt to the
// corpus: it opens every training sample, and a 512-piece vocabulary learned without it
// spells it in 94 pieces instead of 31. The role words are left out: pieces learned for
// "USER" would break the round lengths by which training samples mask their labels.
void train_tokenizer(const std::string& corpus, const std::string& out_dir, int64_t vocab_size,
                     int64_t template_lines = 0);

}  // namespace vilau
