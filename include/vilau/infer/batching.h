#pragma once
// Helpers shared by the text and image engines: prompts of different lengths as one
// left-padded batch, and the context check that both need before allocating a cache.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "vilau/model/batch.h"
#include "vilau/model/vila_u.h"

namespace vilau {

// Rows left-padded with `pad` (attention_mask 0 there), as the official generate() pads.
MultimodalBatch left_padded_batch(const std::vector<std::vector<int64_t>>& rows, int64_t pad,
                                  at::Device device);

// The longest prompt's length with images expanded. ShapeError naming `what` when it does not
// leave `room` positions in the model's context.
int64_t check_context(const std::vector<std::vector<int64_t>>& prompts, const VilaUImpl& model,
                      int64_t room, const std::string& what);

}  // namespace vilau
