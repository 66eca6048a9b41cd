#include "vilau/infer/batching.h"

#include <torch/torch.h>

#include <algorithm>

#include "vilau/core/error.h"
#include "vilau/infer/text_generation.h"

namespace vilau {

MultimodalBatch left_padded_batch(const std::vector<std::vector<int64_t>>& rows, int64_t pad,
                                  at::Device device) {
  size_t length = 0;
  for (const auto& r : rows) length = std::max(length, r.size());
  const auto count = static_cast<int64_t>(rows.size());
  at::Tensor ids = at::full({count, static_cast<int64_t>(length)}, pad, at::kLong);
  at::Tensor mask = at::zeros({count, static_cast<int64_t>(length)}, at::kLong);
  for (int64_t b = 0; b < count; ++b) {
    const auto& r = rows[b];
    const auto from = static_cast<int64_t>(length - r.size());
    ids[b].slice(0, from).copy_(at::tensor(r, at::kLong));
    mask[b].slice(0, from).fill_(1);
  }
  MultimodalBatch batch;
  batch.input_ids = ids.to(device);
  batch.attention_mask = mask.to(device);
  return batch;
}

int64_t check_context(const std::vector<std::vector<int64_t>>& prompts, const VilaUImpl& model,
                      int64_t room, const std::string& what) {
  int64_t longest = 0;
  for (const auto& p : prompts) {
    longest = std::max(longest, expanded_length(p, model.tokens_per_image()));
  }
  const int64_t context = context_length(model.config());
  if (longest + room > context) {
    throw ShapeError(describe(what, "prompt longer than the context",
                              "at most " + std::to_string(context - room) + " positions (context " +
                                  std::to_string(context) + " minus " + std::to_string(room) +
                                  " to generate)",
                              std::to_string(longest) + " positions with images expanded"));
  }
  return longest;
}

}  // namespace vilau
