#pragma once
// Text of a growing answer, one token at a time, at a cost per token that does not grow
// with the answer: each token decodes only a short window of the latest tokens (the
// offsets scheme of HF's streamers and vLLM). Tokenizer::decode is not local in general
// (SentencePiece drops the space of a run's first piece, incomplete UTF-8 becomes U+FFFD),
// so the window keeps one token already shown before the new ones and reports only what
// follows that token's text, and waits while the window ends in U+FFFD.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "vilau/tokenizer/tokenizer.h"

namespace vilau {

// What decoding a partial UTF-8 sequence (byte-fallback pieces) yields: U+FFFD.
inline constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";

class Detokenizer {
 public:
  // `tokenizer` must outlive this.
  Detokenizer(const Tokenizer& tokenizer, bool skip_special_tokens);

  // Adds one token; returns text(), which grows by the characters the token completes.
  const std::string& push(int64_t token);
  // Tokenizer::decode(tokens(), skip_special_tokens), except for a trailing incomplete
  // character, which is held back until the token that completes it.
  const std::string& text() const { return text_; }
  // The answer is complete: text() becomes Tokenizer::decode of every token, a held-back
  // U+FFFD included, as the official answer decodes it.
  const std::string& finish();
  const std::vector<int64_t>& tokens() const { return tokens_; }

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::vector<int64_t> tokens_;
  std::string text_;
  size_t prefix_ = 0;  // the window starts here: the last token whose text was shown
  size_t read_ = 0;    // tokens before this are in text_
};

}  // namespace vilau
