#pragma once
// The LLM side of a generation, shared by text and image decoding: the prompts prefilled,
// then one position per row per step. With the KV cache each step is static
// (LlamaForCausalLM::decode); without it the growing sequence is recomputed at every step,
// the reference the cache is checked against.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>

#include "vilau/llm/llama.h"
#include "vilau/model/vila_u.h"

namespace vilau {

class LlmSequence {
 public:
  // Prefills `in`, leaving room for `steps` more positions. `llm` must outlive this.
  LlmSequence(LlamaForCausalLMImpl& llm, const ExpandedInputs& in, int64_t steps, bool kv_cache);

  // [B, H]: the final state at the prompts' last position.
  const at::Tensor& prefilled() const { return prefilled_; }
  // x [B, H], the next input of every row -> its final state [B, H].
  at::Tensor step(const at::Tensor& x);
  // See KvCache::count_replayed_step.
  void count_replayed_step() { cache_->count_replayed_step(); }

 private:
  LlamaForCausalLMImpl& llm_;
  std::unique_ptr<KvCache> cache_;
  at::Tensor embeds_, position_ids_, mask_;  // the growing sequence without the cache
  at::Tensor prefilled_;
};

}  // namespace vilau
