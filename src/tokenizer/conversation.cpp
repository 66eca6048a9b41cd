#include "vilau/tokenizer/conversation.h"

#include <algorithm>
#include <utility>

#include "vilau/tokenizer/tokenizer.h"

namespace vilau {

namespace {

// Whether code point c is whitespace to Python's str.isspace(): bidirectional class WS, B
// or S, or general category Zs.
bool python_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

// The code point starting at byte i and its length; invalid bytes read as one non-space.
std::pair<char32_t, size_t> code_point_at(const std::string& s, size_t i) {
  const auto b = static_cast<unsigned char>(s[i]);
  const size_t n = b < 0x80           ? 1
                   : (b >> 5) == 0x6  ? 2
                   : (b >> 4) == 0xE  ? 3
                   : (b >> 3) == 0x1E ? 4
                                      : 0;
  if (n == 0 || i + n > s.size()) return {0xFFFD, 1};
  char32_t c = n == 1 ? b : b & (0x7F >> n);
  for (size_t k = 1; k < n; ++k) {
    const auto cont = static_cast<unsigned char>(s[i + k]);
    if ((cont >> 6) != 0x2) return {0xFFFD, 1};
    c = (c << 6) | (cont & 0x3F);
  }
  return {c, n};
}

std::string repeat(const std::string& s, int64_t n) {
  std::string out;
  for (int64_t i = 0; i < n; ++i) {
    out += s;
  }
  return out;
}

void append_role(std::string& out, const char* role, const std::string& message, const char* sep) {
  if (message.empty()) {
    out += std::string(role) + ":";
  } else {
    out += std::string(role) + ": " + message + sep;
  }
}

}  // namespace

std::string python_strip(const std::string& text) {
  // Code point boundaries, then the first and last that are not whitespace.
  std::vector<std::pair<size_t, bool>> points;  // start byte, is space
  for (size_t i = 0; i < text.size();) {
    const auto [c, n] = code_point_at(text, i);
    points.emplace_back(i, python_space(c));
    i += n;
  }
  size_t first = 0, last = points.size();
  while (first < last && points[first].second) ++first;
  while (last > first && points[last - 1].second) --last;
  if (first == last) return "";
  const size_t end = last < points.size() ? points[last].first : text.size();
  return text.substr(points[first].first, end - points[first].first);
}

std::string inference_prompt(const std::vector<Turn>& turns) {
  std::vector<Turn> stripped = turns;
  for (Turn& t : stripped) {
    t.user = python_strip(t.user);
    t.assistant = python_strip(t.assistant);
  }
  return render_chat(stripped);
}

std::string render_chat(const std::vector<Turn>& turns) {
  std::string out = std::string(kSystemPrompt) + " ";
  for (const Turn& turn : turns) {
    append_role(out, "USER", turn.user, " ");
    append_role(out, "ASSISTANT", turn.assistant, "</s>");
  }
  return out;
}

std::string understanding_prompt(const std::string& question, int64_t images) {
  return inference_prompt({{repeat("<image>\n", images) + question, ""}});
}

std::string video_prompt(const std::string& question, int64_t frames) {
  return understanding_prompt(question, frames);
}

std::string text_to_image_prompt(const std::string& prompt) {
  return inference_prompt({{prompt, ""}}) + " <im_start>";
}

std::string text_to_image_unconditional_prompt() { return text_to_image_prompt(" "); }

std::string text_to_video_prompt(const std::string& prompt) {
  return inference_prompt({{prompt, ""}}) + " <vi_start>";
}

TrainingSample make_training_sample(const Tokenizer& tokenizer, const std::vector<Turn>& turns) {
  const std::string conversation = render_chat(turns);
  TrainingSample sample;
  sample.input_ids = tokenizer.encode_with_images(conversation);
  sample.labels = sample.input_ids;
  const auto length = [&](const std::string& text) {
    return static_cast<int64_t>(tokenizer.encode_with_images(text).size());
  };
  // Split into rounds at "</s>"; inside a round, the instruction ends at " ASSISTANT: ".
  const std::string sep2 = "</s>", sep = " ASSISTANT: ";
  int64_t cur = 1;  // BOS
  std::fill(sample.labels.begin(), sample.labels.begin() + 1, kIgnoreIndex);
  size_t start = 0;
  for (int round_index = 0; start < conversation.size(); ++round_index) {
    size_t end = conversation.find(sep2, start);
    const std::string round =
        conversation.substr(start, end == std::string::npos ? std::string::npos : end - start);
    start = end == std::string::npos ? conversation.size() : end + sep2.size();
    const size_t split = round.find(sep);
    if (round.empty() || split == std::string::npos ||
        round.find(sep, split + 1) != std::string::npos) {
      break;
    }
    int64_t round_len = length(round);
    // The "- 2" drops the BOS and the piece the trailing space becomes.
    int64_t instruction_len = length(round.substr(0, split + sep.size())) - 2;
    // legacy=False tokenizers do not repeat the "▁" after "</s>" in later rounds.
    if (round_index != 0) {
      round_len -= 1;
      instruction_len -= 1;
    }
    const int64_t stop =
        std::min<int64_t>(cur + instruction_len, static_cast<int64_t>(sample.labels.size()));
    for (int64_t i = cur; i < stop; ++i) {
      sample.labels[i] = kIgnoreIndex;
    }
    cur += round_len;
  }
  for (int64_t i = cur; i < static_cast<int64_t>(sample.labels.size()); ++i) {
    sample.labels[i] = kIgnoreIndex;
  }
  // The official code masks the whole sample when its rounds do not add up.
  if (cur != static_cast<int64_t>(sample.input_ids.size())) {
    sample.rounds_mismatch = "its rounds cover " + std::to_string(cur) + " of " +
                             std::to_string(sample.input_ids.size()) + " tokens";
    std::fill(sample.labels.begin(), sample.labels.end(), kIgnoreIndex);
  }
  return sample;
}

TrainingSample make_generation_sample(const Tokenizer& tokenizer, const std::string& caption,
                                      int64_t video_frames) {
  const std::string answer = video_frames > 0
                                 ? "<vi_start>" + repeat("<image>", video_frames) + "<vi_end>"
                                 : "<im_start><image><im_end>";
  const std::string text = python_strip(caption).empty() ? "An image." : caption;
  return make_training_sample(tokenizer, {{text, answer}});
}

TrainingSample make_unconditional_generation_sample(const Tokenizer& tokenizer,
                                                    int64_t video_frames) {
  const std::string start = video_frames > 0 ? "<vi_start>" : "<im_start>";
  const std::string answer = video_frames > 0 ? start + repeat("<image>", video_frames) + "<vi_end>"
                                              : start + "<image><im_end>";
  // The empty user turn renders as "USER:ASSISTANT: ", which the round splitting of
  // make_training_sample does not recognise, so the labels are set here.
  TrainingSample sample;
  sample.input_ids = tokenizer.encode_with_images(render_chat({{"", answer}}));
  const int64_t start_id = tokenizer.encode(start, false).back();
  const auto first = std::find(sample.input_ids.begin(), sample.input_ids.end(), start_id);
  sample.labels.assign(sample.input_ids.size(), kIgnoreIndex);
  std::copy(first, sample.input_ids.end(),
            sample.labels.begin() + (first - sample.input_ids.begin()));
  return sample;
}

std::vector<bool> generation_targets(const TrainingSample& sample, int64_t im_start_id) {
  const auto& ids = sample.input_ids;
  const auto n = static_cast<int64_t>(ids.size());
  const bool image_at_end = n >= 3 && ids[n - 3] == kImageTokenIndex;
  // Python's ids[-10:-3]: clamped at the start, and all() of an empty slice is true.
  const int64_t from = std::max<int64_t>(0, n - 10), to = std::max<int64_t>(0, n - 3);
  const bool video_at_end = std::all_of(ids.begin() + from, ids.begin() + std::max(from, to),
                                        [](int64_t id) { return id == kImageTokenIndex; });
  std::vector<bool> targets;
  int64_t chunk_start = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] != kImageTokenIndex) {
      continue;
    }
    const bool im_start_before =
        std::find(sample.labels.begin() + chunk_start, sample.labels.begin() + i, im_start_id) !=
        sample.labels.begin() + i;
    targets.push_back((image_at_end && im_start_before) || video_at_end);
    chunk_start = i + 1;
  }
  return targets;
}

}  // namespace vilau
