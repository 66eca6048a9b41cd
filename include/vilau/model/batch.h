#pragma once
// The batch the unified model trains and answers on, in token space: every image (or video
// frame) is one kImageTokenIndex (-200) placeholder in input_ids, which the model expands to
// the tower's h*w positions. The data pipeline builds these; the model never tokenises.
#include <ATen/core/Tensor.h>

namespace vilau {

struct MultimodalBatch {
  at::Tensor input_ids;       // [B, T] int64, padded with any id where attention_mask is 0
  at::Tensor attention_mask;  // [B, T] int64, 1 for tokens, 0 for padding (either side)
  at::Tensor labels;          // [B, T] int64, kIgnoreIndex where no text target; undefined
                              // when no loss is wanted
  // One entry per placeholder, in row-major order over the batch: pixels [N, 3, S, S] in
  // [-1, 1], or the tower's codes [N, h, w, D] (int64) computed beforehand. Exactly one of
  // the two is defined when the batch has placeholders.
  at::Tensor images;
  at::Tensor image_codes;
  // Packed rows: [B, T] int64, 1, 2, ... for the samples of a row and 0 for padding
  // (then attention_mask is segment_ids != 0). Attention stays within a sample and
  // positions restart at each one. Undefined for one sample per row.
  at::Tensor segment_ids;
};

}  // namespace vilau
