#include "vilau/infer/llm_sequence.h"

#include <torch/torch.h>

namespace vilau {

LlmSequence::LlmSequence(LlamaForCausalLMImpl& llm, const ExpandedInputs& in, int64_t steps,
                         bool kv_cache)
    : llm_(llm) {
  const at::Tensor weight = llm_.model->embed_tokens->weight;
  at::Tensor hidden;
  if (kv_cache) {
    llm_.fuse_projections();  // one product for query/key/value and for gate/up a step
    cache_ = std::make_unique<KvCache>(llm_.config(), in.inputs_embeds.size(0),
                                       in.inputs_embeds.size(1) + steps, weight.scalar_type(),
                                       weight.device());
    hidden = llm_.hidden_states(in.inputs_embeds, in.position_ids, in.attention_mask, cache_.get(),
                                in.causal);
  } else {
    embeds_ = in.inputs_embeds;
    position_ids_ = in.position_ids;
    mask_ = in.attention_mask;
    hidden = llm_.hidden_states(embeds_, position_ids_, mask_, nullptr, in.causal);
  }
  prefilled_ = hidden.select(1, -1);
}

at::Tensor LlmSequence::step(const at::Tensor& x) {
  if (cache_) return llm_.decode(x, *cache_);
  const at::Tensor position = position_ids_.select(1, -1).unsqueeze(1) + 1;
  mask_ = at::cat({mask_, at::ones({mask_.size(0), 1}, mask_.options())}, 1);
  embeds_ = at::cat({embeds_, x.unsqueeze(1)}, 1);
  position_ids_ = at::cat({position_ids_, position}, 1);
  return llm_.hidden_states(embeds_, position_ids_, mask_).select(1, -1);
}

}  // namespace vilau
