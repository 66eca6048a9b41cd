#include "vilau/tokenizer/detokenizer.h"

#include <string_view>

namespace vilau {

namespace {

bool ends_with(const std::string& s, std::string_view tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

}  // namespace

Detokenizer::Detokenizer(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_(skip_special_tokens) {}

const std::string& Detokenizer::push(int64_t token) {
  tokens_.push_back(token);
  const auto window = [&](size_t end) {
    return tokenizer_.decode(std::vector<int64_t>(tokens_.begin() + static_cast<long>(prefix_),
                                                  tokens_.begin() + static_cast<long>(end)),
                             skip_special_);
  };
  const std::string shown = window(read_);
  const std::string now = window(tokens_.size());
  if (now.size() <= shown.size() || ends_with(now, kReplacementCharacter)) return text_;
  if (now.compare(0, shown.size(), shown) == 0) {
    text_ += now.substr(shown.size());
  } else {
    // The new token changed the text before it (a clean-up rule spanning the window):
    // what the whole answer decodes to is the truth.
    text_ = tokenizer_.decode(tokens_, skip_special_);
  }
  prefix_ = read_;
  read_ = tokens_.size();
  return text_;
}

const std::string& Detokenizer::finish() {
  if (read_ < tokens_.size()) {
    text_ = tokenizer_.decode(tokens_, skip_special_);
    prefix_ = read_ = tokens_.size();
  }
  return text_;
}

}  // namespace vilau
