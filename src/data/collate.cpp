#include "vilau/data/collate.h"

#include <torch/torch.h>

#include <algorithm>

#include "vilau/core/error.h"
#include "vilau/tokenizer/tokenizer.h"

namespace vilau::data {

namespace {

const std::string kImage = "<image>";

std::string strip(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  const size_t begin = s.find_first_not_of(ws);
  return begin == std::string::npos ? "" : s.substr(begin, s.find_last_not_of(ws) - begin + 1);
}

int64_t count_images(const std::string& text) {
  int64_t n = 0;
  for (size_t at = text.find(kImage); at != std::string::npos; at = text.find(kImage, at + 1)) {
    ++n;
  }
  return n;
}

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

std::string repeat(const std::string& s, int64_t n) {
  std::string out;
  for (int64_t i = 0; i < n; ++i) {
    out += s;
  }
  return out;
}

}  // namespace

std::vector<Turn> conversation_turns(const nlohmann::json& conversations, int64_t images,
                                     int64_t video_frames, const std::string& where) {
  std::vector<std::string> values;
  size_t first = 0;
  while (first < conversations.size() && conversations[first]["from"] != "human") {
    ++first;
  }
  for (size_t i = first; i < conversations.size(); ++i) {
    const bool human = conversations[i]["from"] == "human";
    if (human != ((i - first) % 2 == 0)) {
      throw FormatError(describe(where, "conversations[" + std::to_string(i) + "]",
                                 std::string("a '") + ((i - first) % 2 == 0 ? "human" : "gpt") +
                                     "' turn (turns alternate)",
                                 "'" + conversations[i]["from"].get<std::string>() + "'"));
    }
    values.push_back(conversations[i]["value"].get<std::string>());
  }
  if (values.size() < 2 || values.size() % 2 != 0) {
    throw FormatError(describe(where, "conversations", "human/gpt pairs",
                               std::to_string(values.size()) + " turns after the first human one"));
  }
  int64_t placeholders = 0;
  for (const std::string& v : values) {
    placeholders += count_images(v);
  }
  if (video_frames > 0) {
    // The frames replace whatever placeholder the question had.
    for (std::string& v : values) {
      v = strip(replace_all(v, kImage, ""));
    }
    values[0] = repeat(kImage + "\n", video_frames) + values[0];
  } else if (images == 1 && placeholders <= 1) {
    for (std::string& v : values) {
      if (count_images(v) == 1) {
        v = kImage + "\n" + strip(replace_all(v, kImage, ""));
      }
    }
    if (placeholders == 0) {
      values[0] = kImage + "\n" + values[0];
    }
  } else if (images > 1 && placeholders == 0) {
    values[0] = repeat(kImage + "\n", images) + values[0];
  } else if (placeholders != images) {
    throw FormatError(describe(where, "<image> placeholders",
                               std::to_string(images) + " (one per image)",
                               std::to_string(placeholders)));
  }
  std::vector<Turn> turns;
  for (size_t i = 0; i < values.size(); i += 2) {
    std::string user = values[i];
    if (video_frames == 0) {
      user = replace_all(user, kImage, "<im_start>" + kImage + "<im_end>");
    }
    turns.push_back({user, values[i + 1]});
  }
  return turns;
}

int64_t expanded_length(const std::vector<int64_t>& ids, int64_t tokens_per_image) {
  const auto images = std::count(ids.begin(), ids.end(), kImageTokenIndex);
  return static_cast<int64_t>(ids.size()) + images * (tokens_per_image - 1);
}

LengthFit fit_length(ProcessedSample& sample, int64_t max_length, int64_t tokens_per_image) {
  if (max_length <= 0 || expanded_length(sample.input_ids, tokens_per_image) <= max_length) {
    return LengthFit::fits;
  }
  if (!sample.images.empty()) {
    return LengthFit::too_long;
  }
  sample.input_ids.resize(max_length);
  sample.labels.resize(max_length);
  return LengthFit::trimmed;
}

MultimodalBatch collate(const std::vector<ProcessedSample>& samples, int64_t pad_id) {
  const auto batch = static_cast<int64_t>(samples.size());
  int64_t length = 0;
  for (const ProcessedSample& s : samples) {
    length = std::max<int64_t>(length, static_cast<int64_t>(s.input_ids.size()));
  }
  MultimodalBatch out;
  out.input_ids = torch::full({batch, length}, pad_id, torch::kInt64);
  out.attention_mask = torch::zeros({batch, length}, torch::kInt64);
  out.labels = torch::full({batch, length}, kIgnoreIndex, torch::kInt64);
  std::vector<at::Tensor> images;
  for (int64_t b = 0; b < batch; ++b) {
    const ProcessedSample& s = samples[b];
    const auto n = static_cast<int64_t>(s.input_ids.size());
    out.input_ids[b].slice(0, 0, n).copy_(torch::tensor(s.input_ids, torch::kInt64));
    out.labels[b].slice(0, 0, n).copy_(torch::tensor(s.labels, torch::kInt64));
    out.attention_mask[b].slice(0, 0, n).fill_(1);
    images.insert(images.end(), s.images.begin(), s.images.end());
  }
  if (!images.empty()) {
    out.images = torch::stack(images);
  }
  return out;
}

PackedBatch collate_packed(const std::vector<std::vector<ProcessedSample>>& rows, int64_t pad_id) {
  std::vector<ProcessedSample> joined;
  std::vector<std::vector<int64_t>> segments;
  for (const auto& row : rows) {
    ProcessedSample r;
    std::vector<int64_t> segment;
    for (size_t k = 0; k < row.size(); ++k) {
      const ProcessedSample& s = row[k];
      r.input_ids.insert(r.input_ids.end(), s.input_ids.begin(), s.input_ids.end());
      r.labels.insert(r.labels.end(), s.labels.begin(), s.labels.end());
      r.images.insert(r.images.end(), s.images.begin(), s.images.end());
      segment.insert(segment.end(), s.input_ids.size(), static_cast<int64_t>(k) + 1);
    }
    joined.push_back(std::move(r));
    segments.push_back(std::move(segment));
  }
  PackedBatch out{collate(joined, pad_id), {}};
  out.segment_ids = torch::zeros_like(out.batch.input_ids);
  for (size_t b = 0; b < segments.size(); ++b) {
    out.segment_ids[static_cast<int64_t>(b)]
        .slice(0, 0, static_cast<int64_t>(segments[b].size()))
        .copy_(torch::tensor(segments[b], torch::kInt64));
  }
  return out;
}

}  // namespace vilau::data
