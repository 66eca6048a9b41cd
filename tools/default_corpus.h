#pragma once
// The tokenizer corpus built into the program (tests/reference/data/corpus.txt, see its
// README): what `vilau init` trains a tokenizer on when given neither --tokenizer nor
// --corpus.
#include <cstdint>
#include <string>
#include <string_view>

namespace vilau::cli {

std::string_view default_corpus();

// Trains a tokenizer on the built-in corpus into `out_dir` (train_tokenizer reads a file:
// the corpus is written there for it, then removed).
void train_default_tokenizer(const std::string& out_dir, int64_t vocab_size);

}  // namespace vilau::cli
