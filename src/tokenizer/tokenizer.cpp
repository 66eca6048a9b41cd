// HF LlamaTokenizer(legacy=False), transformers 4.36: tokenize() prepends "▁" to the
// text, splits it on added tokens, encodes each plain segment with SentencePiece (whose
// dummy prefix is disabled; segments starting with a space are encoded after "<unk>" and
// the "<unk>" pieces dropped), and drops a lone leading "▁" before a special token.
#include "vilau/tokenizer/tokenizer.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "sentencepiece_proto.h"
#include "vilau/core/error.h"
#include "vilau/core/file.h"
#include "vilau/io/json_file.h"

namespace fs = std::filesystem;

namespace vilau {

namespace {

const std::string kUnderline = "\xE2\x96\x81";  // "▁", SentencePiece's space
const char* const kVilaTokens[] = {"<im_start>", "<im_end>", "<vi_start>", "<vi_end>"};

struct AddedToken {
  std::string content;
  int64_t id = 0;
  bool lstrip = false;
  bool rstrip = false;
};

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (size_t pos = text.find(from); pos != std::string::npos;
       pos = text.find(from, pos + to.size())) {
    text.replace(pos, from.size(), to);
  }
  return text;
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

// Python's str.strip() family strips every whitespace character.
const char* const kWhitespace = " \t\n\r\f\v";
std::string lstrip(const std::string& s) {
  const size_t p = s.find_first_not_of(kWhitespace);
  return p == std::string::npos ? "" : s.substr(p);
}
std::string rstrip(const std::string& s) {
  const size_t p = s.find_last_not_of(kWhitespace);
  return p == std::string::npos ? "" : s.substr(0, p + 1);
}

// A special-token value in special_tokens_map.json / tokenizer_config.json: a string or
// {"content": ...}.
std::string token_text(const nlohmann::json& value) {
  if (value.is_string()) {
    return value.get<std::string>();
  }
  if (value.is_object() && value.contains("content")) {
    return value["content"].get<std::string>();
  }
  return {};
}

}  // namespace

struct Tokenizer::Impl {
  sentencepiece::SentencePieceProcessor sp;
  std::vector<AddedToken> added;             // longest first, for splitting
  std::map<int64_t, std::string> added_ids;  // id -> content
  std::set<std::string> special;             // HF's all_special_tokens
  std::set<std::string> legacy_added;        // decoded as separate words
  std::string bos = "<s>", eos = "</s>", unk = "<unk>", pad;
  bool add_bos = true, add_eos = false, clean_up_spaces = false;
  size_t unk_length = 0;
  std::string dir;

  const AddedToken* added_token(const std::string& content) const {
    for (const AddedToken& t : added) {
      if (t.content == content) {
        return &t;
      }
    }
    return nullptr;
  }

  // The trie split of PreTrainedTokenizer.tokenize: leftmost, longest added token first.
  std::vector<std::pair<std::string, const AddedToken*>> split(const std::string& text) const {
    std::vector<std::pair<std::string, const AddedToken*>> parts;
    std::string plain;
    for (size_t i = 0; i < text.size();) {
      const AddedToken* match = nullptr;
      for (const AddedToken& t : added) {
        if (text.compare(i, t.content.size(), t.content) == 0) {
          match = &t;
          break;
        }
      }
      if (match == nullptr) {
        plain += text[i++];
        continue;
      }
      if (!plain.empty()) {
        parts.emplace_back(plain, nullptr);
        plain.clear();
      }
      parts.emplace_back(match->content, match);
      i += match->content.size();
    }
    if (!plain.empty()) {
      parts.emplace_back(plain, nullptr);
    }
    for (size_t i = 0; i < parts.size(); ++i) {
      if (const AddedToken* t = parts[i].second) {
        if (t->rstrip && i + 1 < parts.size() && !parts[i + 1].second) {
          parts[i + 1].first = lstrip(parts[i + 1].first);
        }
        if (t->lstrip && i > 0 && !parts[i - 1].second) {
          parts[i - 1].first = rstrip(parts[i - 1].first);
        }
      }
    }
    return parts;
  }

  std::vector<std::string> sp_pieces(const std::string& text) const {
    std::vector<std::string> pieces;
    const auto status = sp.Encode(text, &pieces);
    if (!status.ok()) {
      throw FormatError(describe(dir + "/tokenizer.model", "SentencePiece failed to encode", {},
                                 status.ToString()));
    }
    return pieces;
  }

  // LlamaTokenizer._tokenize.
  std::vector<std::string> tokenize_segment(const std::string& text) const {
    if (!starts_with(text, kUnderline) && !starts_with(text, " ")) {
      return sp_pieces(text);
    }
    std::vector<std::string> pieces = sp_pieces(unk + text);
    if (pieces.size() >= unk_length) {
      pieces.erase(pieces.begin(), pieces.begin() + static_cast<std::ptrdiff_t>(unk_length));
    }
    return pieces;
  }

  std::string decode_pieces(std::vector<std::string> pieces) const {
    // LlamaTokenizer.convert_tokens_to_string: the prefix space we added goes again.
    if (!pieces.empty() && starts_with(pieces[0], kUnderline)) {
      pieces[0] = pieces[0].substr(kUnderline.size());
    }
    std::string out;
    std::vector<std::string> run;
    auto flush = [&] {
      std::string text;
      sp.Decode(run, &text);
      out += text;
      run.clear();
    };
    for (const std::string& piece : pieces) {
      if (special.count(piece)) {
        flush();
        out += piece;
      } else {
        run.push_back(piece);
      }
    }
    flush();
    return out;
  }

  int64_t id_of(const std::string& token) const {
    if (const AddedToken* t = added_token(token)) {
      return t->id;
    }
    return sp.PieceToId(token);
  }
};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const std::string& dir) {
  auto impl = std::make_unique<Impl>();
  impl->dir = dir;
  const fs::path root(dir);
  const fs::path model_path = root / "tokenizer.model";
  // LLaMA's is 0.5 MB; a bound far above any real model keeps a wrong file from filling
  // memory, and a FIFO or device is refused before it is opened.
  std::ostringstream bytes;
  bytes << read_regular_file(model_path.string(), "a SentencePiece model", int64_t{1} << 30);
  const auto status =
      impl->sp.LoadFromSerializedProto(without_dummy_prefix(bytes.str(), model_path.string()));
  if (!status.ok()) {
    throw FormatError(
        describe(model_path.string(), "corrupt SentencePiece model", {}, status.ToString()));
  }
  const int64_t base = impl->sp.GetPieceSize();

  nlohmann::json config = nlohmann::json::object(), special_map = nlohmann::json::object();
  if (fs::exists(root / "tokenizer_config.json")) {
    config =
        io::read_json_file((root / "tokenizer_config.json").string(), "an HF tokenizer config");
  }
  if (fs::exists(root / "special_tokens_map.json")) {
    special_map =
        io::read_json_file((root / "special_tokens_map.json").string(), "an HF special-tokens map");
  }
  auto special_token = [&](const char* key, const std::string& fallback) {
    std::string text = special_map.contains(key) ? token_text(special_map[key]) : "";
    if (text.empty() && config.contains(key)) {
      text = token_text(config[key]);
    }
    return text.empty() ? fallback : text;
  };
  impl->bos = special_token("bos_token", "<s>");
  impl->eos = special_token("eos_token", "</s>");
  impl->unk = special_token("unk_token", "<unk>");
  impl->pad = special_token("pad_token", impl->unk);  // VILA-U pads with <unk>
  impl->add_bos = config.value("add_bos_token", true);
  impl->add_eos = config.value("add_eos_token", false);
  impl->clean_up_spaces = config.value("clean_up_tokenization_spaces", false);

  // The base vocabulary's special pieces split text like added tokens do (4.34+).
  std::map<std::string, AddedToken> added;
  for (const std::string& piece : {impl->unk, impl->bos, impl->eos}) {
    const int id = impl->sp.PieceToId(piece);
    if (impl->sp.IdToPiece(id) == piece) {
      added[piece] = {piece, id, false, false};
    }
  }
  if (config.contains("added_tokens_decoder")) {
    for (const auto& [id, spec] : config["added_tokens_decoder"].items()) {
      if (spec.value("single_word", false)) {
        throw FormatError(describe((root / "tokenizer_config.json").string(),
                                   "added token " + spec.dump(), "single_word = false",
                                   "true (not supported)"));
      }
      const std::string content = spec.value("content", "");
      added[content] = {content, std::stoll(id), spec.value("lstrip", false),
                        spec.value("rstrip", false)};
    }
  }
  const fs::path added_path = root / "added_tokens.json";
  const nlohmann::json added_json =
      io::read_json_file(added_path.string(), "VILA-U's added tokens");
  for (const auto& [content, id] : added_json.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < base) {
      throw FormatError(describe(added_path.string(), "token '" + content + "'",
                                 "an id >= the " + std::to_string(base) + " SentencePiece pieces",
                                 id.dump()));
    }
    added.emplace(content, AddedToken{content, id.get<int64_t>(), false, false});
  }
  for (const char* token : kVilaTokens) {
    if (added.count(token) == 0) {
      throw FormatError(describe(added_path.string(),
                                 "missing added token '" + std::string(token) + "'",
                                 "<im_start>, <im_end>, <vi_start> and <vi_end>"));
    }
  }
  for (auto& [content, token] : added) {
    impl->added_ids[token.id] = content;
    impl->added.push_back(token);
  }
  std::sort(impl->added.begin(), impl->added.end(), [](const AddedToken& a, const AddedToken& b) {
    return a.content.size() > b.content.size();
  });

  impl->special = {impl->bos, impl->eos, impl->unk, impl->pad};
  std::vector<std::string> additional;
  const nlohmann::json& extra =
      special_map.contains("additional_special_tokens")
          ? special_map["additional_special_tokens"]
          : config.value("additional_special_tokens", nlohmann::json::array());
  for (const auto& value : extra) {
    additional.push_back(token_text(value));
    impl->special.insert(additional.back());
  }
  // _decode: added tokens that are not special, and additional specials past the base vocab.
  for (const AddedToken& t : impl->added) {
    if (impl->special.count(t.content) == 0) {
      impl->legacy_added.insert(t.content);
    }
  }
  for (const std::string& token : additional) {
    if (impl->id_of(token) >= base) {
      impl->legacy_added.insert(token);
    }
  }
  impl->unk_length = impl->sp_pieces(impl->unk).size();
  return Tokenizer(std::move(impl));
}

std::vector<std::string> Tokenizer::tokenize(const std::string& text) const {
  if (text.empty()) {
    return {};
  }
  std::vector<std::string> tokens;
  for (const auto& [part, token] : impl_->split(kUnderline + replace_all(text, kUnderline, " "))) {
    if (token != nullptr) {
      tokens.push_back(part);
    } else if (!part.empty()) {
      const auto pieces = impl_->tokenize_segment(part);
      tokens.insert(tokens.end(), pieces.begin(), pieces.end());
    }
  }
  if (tokens.size() > 1 && tokens[0] == kUnderline && impl_->special.count(tokens[1])) {
    tokens.erase(tokens.begin());
  }
  return tokens;
}

std::vector<int64_t> Tokenizer::encode(const std::string& text, bool add_special_tokens) const {
  std::vector<int64_t> ids;
  if (add_special_tokens && impl_->add_bos) {
    ids.push_back(bos_id());
  }
  for (const std::string& token : tokenize(text)) {
    ids.push_back(impl_->id_of(token));
  }
  if (add_special_tokens && impl_->add_eos) {
    ids.push_back(eos_id());
  }
  return ids;
}

std::vector<int64_t> Tokenizer::encode_with_images(const std::string& text) const {
  static const std::string kImage = "<image>";
  std::vector<int64_t> ids{bos_id()};
  size_t start = 0;
  while (true) {
    const size_t next = text.find(kImage, start);
    const std::vector<int64_t> chunk =
        encode(text.substr(start, next == std::string::npos ? std::string::npos : next - start));
    // Each chunk's own BOS is dropped, as tokenizer_image_token does.
    ids.insert(ids.end(), chunk.begin() + (chunk.empty() ? 0 : 1), chunk.end());
    if (next == std::string::npos) {
      return ids;
    }
    ids.push_back(kImageTokenIndex);
    start = next + kImage.size();
  }
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  std::vector<std::string> texts, run;
  // Like PreTrainedTokenizer._decode: an empty run is kept only at the very end.
  auto flush = [&](bool last) {
    if (!run.empty()) {
      const std::string text = impl_->decode_pieces(run);
      if (last || !text.empty()) {
        texts.push_back(text);
      }
      run.clear();
    }
  };
  for (int64_t id : ids) {
    if (id < 0 || id >= size()) {
      throw ShapeError(describe("Tokenizer::decode", "token id " + std::to_string(id),
                                "an id in [0, " + std::to_string(size()) + ")"));
    }
    const auto added = impl_->added_ids.find(id);
    const std::string token =
        added != impl_->added_ids.end() ? added->second : impl_->sp.IdToPiece(static_cast<int>(id));
    if (skip_special_tokens && impl_->special.count(token)) {
      continue;
    }
    if (impl_->legacy_added.count(token)) {
      flush(false);
      texts.push_back(token);
    } else {
      run.push_back(token);
    }
  }
  flush(true);
  // spaces_between_special_tokens=True, HF's default.
  std::string out;
  for (size_t i = 0; i < texts.size(); ++i) {
    out += (i ? " " : "") + texts[i];
  }
  if (impl_->clean_up_spaces) {
    for (const auto& [from, to] :
         std::vector<std::pair<std::string, std::string>>{{" .", "."},
                                                          {" ?", "?"},
                                                          {" !", "!"},
                                                          {" ,", ","},
                                                          {" ' ", "'"},
                                                          {" n't", "n't"},
                                                          {" 'm", "'m"},
                                                          {" 's", "'s"},
                                                          {" 've", "'ve"},
                                                          {" 're", "'re"}}) {
      out = replace_all(out, from, to);
    }
  }
  return out;
}

int64_t Tokenizer::bos_id() const { return impl_->id_of(impl_->bos); }
int64_t Tokenizer::eos_id() const { return impl_->id_of(impl_->eos); }
int64_t Tokenizer::pad_id() const { return impl_->id_of(impl_->pad); }
int64_t Tokenizer::unk_id() const { return impl_->id_of(impl_->unk); }

int64_t Tokenizer::token_id(const std::string& token) const {
  if (const AddedToken* t = impl_->added_token(token)) {
    return t->id;
  }
  throw FormatError(describe(impl_->dir, "no added or special token '" + token + "'"));
}

int64_t Tokenizer::size() const {
  const int64_t pieces = impl_->sp.GetPieceSize();
  // added_ids is ordered by id: the last one bounds the vocabulary.
  return impl_->added_ids.empty() ? pieces : std::max(pieces, impl_->added_ids.rbegin()->first + 1);
}

}  // namespace vilau
