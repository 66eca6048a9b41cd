#pragma once
// From a decoded sample to token ids with the official templates (SPEC §3.4), and from
// samples to a right-padded MultimodalBatch.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "vilau/data/config.h"
#include "vilau/model/batch.h"
#include "vilau/tokenizer/conversation.h"

namespace vilau::data {

// The turns of a LLaVA conversation with the placeholders laid out as the official
// preprocess_multimodal does: one image moves to the front of its turn as "<image>\n"
// (added to the first question when missing) and is wrapped as <im_start><image><im_end>;
// several images keep their places (or are prepended) and are wrapped likewise; a video
// puts "<image>\n" x frames before the first question, unwrapped. A leading "gpt" turn is
// dropped. FormatError naming `where` when the placeholders do not match `images`.
std::vector<Turn> conversation_turns(const nlohmann::json& conversations, int64_t images,
                                     int64_t video_frames, const std::string& where);

// A sample ready for batching.
struct ProcessedSample {
  std::vector<int64_t> input_ids;  // kImageTokenIndex per image
  std::vector<int64_t> labels;
  std::vector<at::Tensor> images;  // [3, S, S] each, in placeholder order
  std::string id;                  // where it came from ("file.jsonl:3")
  std::string caption;             // t2i, t2v and tower samples
};

// Length once every placeholder becomes `tokens_per_image` positions.
int64_t expanded_length(const std::vector<int64_t>& ids, int64_t tokens_per_image);

enum class LengthFit { fits, trimmed, too_long };
// Text-only samples longer than `max_length` are cut to it; samples with images cannot be
// cut without breaking a visual span, so they are reported too_long. 0: no limit.
LengthFit fit_length(ProcessedSample& sample, int64_t max_length, int64_t tokens_per_image);

// Right-pads to the longest sample: input ids `pad_id`, labels kIgnoreIndex, mask 0.
// Images are stacked in row-major placeholder order; undefined when there are none.
MultimodalBatch collate(const std::vector<ProcessedSample>& samples, int64_t pad_id);

struct PackedBatch {
  MultimodalBatch batch;
  at::Tensor segment_ids;  // [B, T]: 1, 2, ... per sample of a row, 0 for padding
};
// Each row the concatenation of its samples, right-padded like collate().
PackedBatch collate_packed(const std::vector<std::vector<ProcessedSample>>& rows, int64_t pad_id);

}  // namespace vilau::data
