#pragma once
// The unified VILA-U model (SPEC §3): the vision tower turns images into codes, the
// projector turns summed code vectors into LLM inputs, the LLM reads text and visual
// positions, lm_head predicts text and the depth transformer predicts the D codes of every
// visual position that is a generation target.
//
// The tower is frozen here and always runs in eval mode, as in the official multimodal
// stages (its own training is the tower stage). Batching, caches and sampling live outside.
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "vilau/core/config.h"
#include "vilau/core/recompute.h"
#include "vilau/llm/depth_transformer.h"
#include "vilau/llm/llama.h"
#include "vilau/model/batch.h"
#include "vilau/model/config.h"
#include "vilau/model/load_module.h"
#include "vilau/model/projector.h"
#include "vilau/vision/vision_tower.h"

namespace vilau {

// Weights of the two loss parts; the official code adds them with weight 1 each.
struct LossWeights {
  double text = 1.0;
  double visual = 1.0;

  template <class V>
  void visit(V& v) {
    v.field("text", text);
    v.field("visual", visual);
  }
  void validate(const std::string& path) const;
};

struct VilaULoss {
  at::Tensor loss;         // text * weights.text + visual * weights.visual
  at::Tensor text_loss;    // mean cross-entropy over text targets; 0 when there are none
  at::Tensor visual_loss;  // mean over visual target positions x D codes; 0 when none
  int64_t text_targets = 0;
  int64_t visual_targets = 0;  // positions, each with D codes
};

// The sequence the LLM sees once every placeholder is expanded to h*w positions.
struct ExpandedInputs {
  at::Tensor inputs_embeds;   // [B, L, H]
  at::Tensor attention_mask;  // [B, L] int64: 0 padding, else the position's sample (1, 2, ...)
  at::Tensor position_ids;    // [B, L], restarting at each sample of a packed row
  // [B, L, D]: text labels repeated over D; code + vocab_size at the positions of images
  // that are generation targets (the official rule, generation_targets()); ignore elsewhere.
  // Undefined when the batch has no labels.
  at::Tensor labels;
  // Every row is one unpadded sample (the mask is all ones): attention is plainly causal.
  bool causal = false;
};

enum class Padding { right, left };

// Visual targets found in the labels, as the official loss finds them: the positions
// strictly between <im_start> and <im_end> (<vi_start> and <vi_end>), whose codes the
// hidden state one position earlier predicts. A video span is split into frames of
// tokens_per_image positions.
struct VisualSpan {
  int64_t row = 0;
  int64_t start = 0;  // first position whose labels are codes
  int64_t length = 0;
};
// labels0: [B, L] (the first code column of ExpandedInputs::labels). ShapeError when start
// and end markers do not pair up.
std::vector<VisualSpan> visual_spans(const at::Tensor& labels0, int64_t vocab_size,
                                     int64_t tokens_per_image);

class VilaUImpl : public torch::nn::Module {
 public:
  explicit VilaUImpl(const ModelConfig& config);

  // Our names: "llm.*", "mm_projector.*" and everything below "vision_tower." including
  // "vision_tower.rqtransformer.*" (what OfficialCheckpoint::tensor serves).
  void load(const TensorLookup& lookup);
  // The inverse of load(), in the names export_official() takes.
  std::map<std::string, at::Tensor> official_state_dict();
  // The official name of one of our parameters outside the vision tower ("<child>.<name>"
  // as named_parameters() gives them): official_state_dict()'s key for it.
  static std::string official_name(const std::string& name);

  // Pixels [N, 3, S, S] in [-1, 1] -> codes [N, h, w, D]; no gradients, no EMA updates.
  at::Tensor encode_images(const at::Tensor& pixels);
  // Codes [..., D] -> LLM input embeddings [..., H]: the projected sum of code vectors.
  at::Tensor embed_codes(const at::Tensor& codes);
  // The projector applied to sums of code embeddings [..., C] that the caller already has
  // (generation builds them depth by depth): embed_codes without the lookups and checks.
  at::Tensor embed_code_sum(const at::Tensor& sum);
  // Training forwards run the projector through `wrapper` as block 0 (as LLaMA's layers):
  // the trainer shards it this way.
  void set_projector_wrapper(BlockWrapper wrapper) { projector_wrapper_ = std::move(wrapper); }
  // Per-depth code vectors summed cumulatively, [..., D, C]: the depth transformer's inputs.
  at::Tensor code_prefix_sums(const at::Tensor& codes);

  ExpandedInputs expand(const MultimodalBatch& batch, Padding padding = Padding::right);
  // The training objective (SPEC §3.6) on a batch with labels.
  VilaULoss loss(const MultimodalBatch& batch, const LossWeights& weights = {});
  VilaULoss loss(const ExpandedInputs& inputs, const LossWeights& weights = {});

  // Keeps the frozen tower in eval mode whatever the rest does.
  void train(bool on = true) override;

  const ModelConfig& config() const { return config_; }
  int64_t tokens_per_image() const;

  VisionTower vision_tower{nullptr};
  MultimodalProjector mm_projector{nullptr};
  LlamaForCausalLM llm{nullptr};
  DepthTransformer depth_transformer{nullptr};

 private:
  ModelConfig config_;
  BlockWrapper projector_wrapper_;
};
TORCH_MODULE(VilaU);

// Opens an official (or vilau-exported) folder, checks every tensor against its config and
// loads the model in `dtype` on `device`. The modules are built in `dtype`, so a 7B model
// in bf16 never exists in fp32.
VilaU load_vila_u(const std::string& root, at::ScalarType dtype, at::Device device);

}  // namespace vilau
