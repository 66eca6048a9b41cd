#include "vilau/train/memory_plan.h"

#include <c10/core/DefaultDtype.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "vilau/core/error.h"
#include "vilau/dist/flat_layout.h"
#include "vilau/train/parallel_optimizer.h"
#include "vilau/train/trainer.h"

namespace vilau {

namespace {

const std::vector<std::string> kPlannedModules = {"llm", "mm_projector", "depth_transformer"};

// Factories without a tensor argument (empty, ones, randn, arange) go through BackendSelect,
// which picks the backend from their TensorOptions, i.e. the CPU. Excluding it and including
// the Meta key sends them, and every op on their results (init, scaling), to the meta kernels:
// tensors with shapes, dtypes and no storage. The default dtype makes the modules come out
// in the training dtype, as load_vila_u builds them.
class MetaConstruction {
 public:
  explicit MetaConstruction(at::ScalarType dtype) : previous_(c10::get_default_dtype()) {
    c10::set_default_dtype(c10::scalarTypeToTypeMeta(dtype));
  }
  ~MetaConstruction() { c10::set_default_dtype(previous_); }
  MetaConstruction(const MetaConstruction&) = delete;
  MetaConstruction& operator=(const MetaConstruction&) = delete;

 private:
  c10::impl::ExcludeDispatchKeyGuard no_backend_select_{c10::DispatchKey::BackendSelect};
  c10::impl::IncludeDispatchKeyGuard meta_{c10::DispatchKey::Meta};
  caffe2::TypeMeta previous_;
};

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

std::vector<std::string> resolved_trainable(const std::vector<std::string>& requested) {
  if (requested.empty() || requested == std::vector<std::string>{"all"}) return kPlannedModules;
  return requested;
}

bool contains(const std::vector<std::string>& items, const std::string& item) {
  return std::find(items.begin(), items.end(), item) != items.end();
}

const std::vector<int64_t>& shape_of(const std::map<std::string, at::Tensor>& params,
                                     const std::string& name,
                                     std::map<std::string, std::vector<int64_t>>& cache) {
  auto it = params.find(name);
  if (it == params.end()) {
    throw ShapeError(describe("vilau plan", "parameter " + name, "present in the model", "none"));
  }
  return cache[name] = it->second.sizes().vec();
}

// Layer shapes the activation estimate needs, read off the built modules.
struct Shapes {
  int64_t hidden = 0, intermediate = 0, vocab = 0, heads = 0, layers = 0;
  int64_t code_dim = 0;  // projector input
  int64_t depth = 0, embed = 0, depth_mlp = 0, codebook = 0, depth_heads = 0, blocks = 0;
  bool resid_dropout = false, attn_dropout = false;
};

Shapes read_shapes(VilaUImpl& model) {
  std::map<std::string, at::Tensor> params;
  for (const auto& p : model.named_parameters()) params.emplace(p.key(), p.value());
  std::map<std::string, std::vector<int64_t>> cache;
  const auto dim = [&](const std::string& name, size_t d) {
    return shape_of(params, name, cache).at(d);
  };
  Shapes s;
  s.vocab = dim("llm.model.embed_tokens.weight", 0);
  s.hidden = dim("llm.model.embed_tokens.weight", 1);
  s.intermediate = dim("llm.model.layers.0.mlp.gate_proj.weight", 0);
  s.layers = static_cast<int64_t>(model.llm->model->layers->size());
  s.heads = model.config().llm.num_heads;  // not a shape: the config splits q_proj
  s.code_dim = dim("mm_projector.layers.0.weight", 1);
  s.depth = dim("depth_transformer.pos_emb_d", 1);
  s.embed = dim("depth_transformer.pos_emb_d", 2);
  s.depth_mlp = dim("depth_transformer.head_transformer.blocks.0.mlp.0.weight", 0);
  s.codebook = dim("depth_transformer.classifier_mlp.linear.weight", 0);
  s.depth_heads = model.config().depth_transformer.num_heads;
  s.blocks = static_cast<int64_t>(model.depth_transformer->head_transformer->blocks->size());
  s.resid_dropout = model.config().depth_transformer.resid_dropout > 0.0;
  s.attn_dropout = model.config().depth_transformer.attn_dropout > 0.0;
  return s;
}

// Activation bytes of one training step, per rank. What autograd saves follows the layer
// code in src/llm and src/model; attention is assumed to run as a fused SDPA kernel that keeps
// q, k, v, the output, the log-sum-exp and the boolean mask turned into a [B, 1, L, L] bias.
ActivationEstimate estimate_activations(const Shapes& s, const PlanOptions& o, bool llm_path,
                                        bool any_trainable) {
  const int64_t b = static_cast<int64_t>(c10::elementSize(o.dtype));
  const int64_t rows = o.micro_batch, len = o.seq_len, tokens = rows * len;
  const int64_t h = s.hidden, i = s.intermediate;
  // ZeRO-3 recomputes every decoder layer and depth block in backward.
  const bool recompute = o.activation_checkpointing || o.zero_stage == 3;
  // RMSNorm: the fp32 upcast (none in fp32), the normalised cast and the scaled output.
  const int64_t norm = (b < 4 ? 4 * h : 0) + 2 * b * h;
  // Per token of a decoder layer: two norms, q, k, v (repeated to all heads), the attention
  // output and o_proj's input, log-sum-exp, and the MLP's gate, SiLU, up and product.
  const int64_t layer_token = 2 * norm + 5 * b * h + 4 * s.heads + 4 * b * i;
  const int64_t layer = tokens * layer_token + rows * len * len * b;
  // Its backward adds the gradients of the MLP's intermediates and of q, k, v, in and out.
  const int64_t layer_backward = tokens * (3 * b * i + 5 * b * h);

  ActivationEstimate a;
  if (llm_path) {
    a.checkpointed_inputs = recompute ? (s.layers - 1) * tokens * b * h : 0;
    a.llm_layers = recompute ? 0 : s.layers * layer;
    a.llm_layer_backward = (recompute ? layer : 0) + layer_backward;
    // Input embeddings, the boolean mask, cos/sin, the final norm and the projector's
    // Linear-GELU-Linear over every position (an upper bound: all positions are images).
    a.whole_step = tokens * (b * h + norm + b * (s.code_dim + 2 * h)) + rows * len * len +
                   2 * tokens * b * (h / s.heads);
  }
  // Heads on P visual and L - P text positions. Text: lm_head's input and the fp32
  // log-softmax kept; its backward holds fp32 and cast gradients of the logits. Visual: per
  // depth code, every block's LayerNorm inputs/outputs, q, scaled k, v, merged heads, GELU in
  // and out, attention probabilities, then the classifier's LayerNorm, linear and fp32
  // log-softmax; its backward again the logits' gradients.
  const int64_t v = s.vocab, e = s.embed, k = s.codebook, d = s.depth;
  const int64_t text_saved = llm_path ? b * h + 4 * v : 0;
  const int64_t text_backward = llm_path ? 8 * v + b * v : 0;
  // Training-mode dropout keeps a byte mask per element (two residual dropouts per block).
  const int64_t block = 8 * b * e + 2 * b * s.depth_mlp + b * s.depth_heads * d +
                        (s.resid_dropout ? 2 * e : 0) + (s.attn_dropout ? s.depth_heads * d : 0);
  // Under ZeRO-3 the blocks keep only their inputs, and one block's intermediates come back
  // at a time during backward.
  const int64_t kept_per_block = o.zero_stage == 3 ? b * e : block;
  const int64_t visual_saved =
      any_trainable
          ? b * h + b * (d - 1) * s.code_dim + d * (s.blocks * kept_per_block + 2 * b * e + 4 * k)
          : 0;
  const int64_t visual_backward =
      any_trainable ? d * (8 * k + b * k) + (o.zero_stage == 3 ? d * block : 0) : 0;
  const auto heads = [&](int64_t visual) {
    const int64_t text = len - visual;
    return rows * (text * text_saved + visual * visual_saved +
                   std::max(text > 0 ? text * text_backward : 0,
                            visual > 0 ? visual * visual_backward : 0));
  };
  a.visual_positions = o.visual_positions;
  if (a.visual_positions < 0) {
    a.visual_positions = heads(len) >= heads(0) ? len : 0;
  }
  a.heads = heads(a.visual_positions);
  // The heads run backward first and are freed before the decoder layers' backward.
  a.peak =
      a.whole_step + a.checkpointed_inputs + a.llm_layers + std::max(a.heads, a.llm_layer_backward);
  return a;
}

double gib(int64_t bytes) { return std::round(static_cast<double>(bytes) / (1 << 30) * 100) / 100; }

}  // namespace

VilaU build_vila_u_on_meta(const ModelConfig& config, at::ScalarType dtype) {
  VilaU model{nullptr};
  {
    MetaConstruction meta(dtype);
    model = VilaU(config);
  }
  for (const auto& t : model->named_parameters()) {
    if (!t.value().is_meta()) {
      throw Error(describe("meta construction", "parameter " + t.key(), "on the meta device",
                           t.value().device().str()));
    }
  }
  for (const auto& t : model->named_buffers()) {
    if (!t.value().is_meta()) {
      throw Error(describe("meta construction", "buffer " + t.key(), "on the meta device",
                           t.value().device().str()));
    }
  }
  return model;
}

void PlanOptions::validate() const {
  config_check(world_size >= 1, "--world-size", ">= 1", std::to_string(world_size));
  config_check(zero_stage >= 0 && zero_stage <= 3, "--zero-stage", "0, 1, 2 or 3",
               std::to_string(zero_stage));
  config_check(micro_batch >= 1, "--micro-batch", ">= 1", std::to_string(micro_batch));
  config_check(seq_len >= 1, "--seq-len", ">= 1", std::to_string(seq_len));
  config_check(bucket_mb > 0, "--bucket-mb", "> 0", std::to_string(bucket_mb));
  config_check(dtype == at::kBFloat16 || dtype == at::kFloat, "--dtype", "bf16 or fp32",
               c10::toString(dtype));
  config_check(visual_positions >= -1 && visual_positions <= seq_len, "--visual-positions",
               "0 .. seq-len (or -1: the worst case)", std::to_string(visual_positions));
  const std::vector<std::string> modules = resolved_trainable(trainable);
  for (const std::string& m : modules) {
    config_check(contains(kPlannedModules, m), "--trainable",
                 "all or some of " + joined(kPlannedModules) +
                     " (the multimodal stages; the tower stage is not planned)",
                 "'" + m + "'");
  }
}

MemoryPlan plan_memory(const ModelConfig& config, const PlanOptions& options) {
  options.validate();
  MemoryPlan plan;
  plan.options = options;
  plan.options.trainable = resolved_trainable(options.trainable);
  plan.model_name = config.name;
  const std::vector<std::string>& trainable = plan.options.trainable;
  VilaU model = build_vila_u_on_meta(config, options.dtype);

  // Counts per top-level module.
  for (const auto& child : model->named_children()) {
    ModulePlanCount count{child.key(), 0, 0, contains(trainable, child.key())};
    for (const auto& p : child.value()->named_parameters()) {
      count.parameters += p.value().numel();
      plan.parameters += p.value().numel() * static_cast<int64_t>(p.value().element_size());
    }
    for (const auto& t : child.value()->named_buffers()) {
      count.buffers += t.value().numel();
      plan.buffers += t.value().numel() * static_cast<int64_t>(t.value().element_size());
    }
    (count.trainable ? plan.trainable_parameters : plan.frozen_parameters) += count.parameters;
    plan.buffer_elements += count.buffers;
    plan.modules.push_back(count);
  }

  const int64_t n = options.world_size;
  const int64_t b = static_cast<int64_t>(c10::elementSize(options.dtype));
  // The trainer's own parameters and layout (ParallelOptimizer): buckets or ZeRO-3 units in
  // backward order.
  auto backward_order = select_trainable(*model, trainable);
  std::reverse(backward_order.begin(), backward_order.end());
  const FlatLayout layout =
      options.zero_stage == 3
          ? FlatLayout(backward_order, fsdp_unit, n)
          : FlatLayout(backward_order, static_cast<int64_t>(options.bucket_mb * (1 << 20) / 4),
                       options.zero_stage >= 1 ? n : 1);
  for (const FlatLayout::Bucket& bucket : layout.buckets) {
    const std::string& first = layout.params[bucket.first_param].name;
    plan.units.push_back(
        {options.zero_stage == 3 ? fsdp_unit(first) : "bucket " + std::to_string(plan.units.size()),
         bucket.numel});
  }
  const int64_t shard = layout.shard_numel, padded = layout.padded;
  for (const PlanUnit& u : plan.units) {
    if (u.name == "root") {
      plan.root_unit = u.numel;
    } else if (u.numel > plan.largest_unit.numel) {
      plan.largest_unit = u;
    }
  }

  const int64_t frozen_bytes = plan.parameters - plan.trainable_parameters * b;
  const int64_t largest = plan.largest_unit.numel;
  const int64_t transient_grad = b * largest;  // one bucket's .grad in the parameter dtype
  // The fp32 outputs of the two reduce-scatters in flight, a 1/N chunk of a bucket each:
  // at most the two largest buckets (the root included).
  std::vector<int64_t> sizes;
  for (const PlanUnit& u : plan.units) sizes.push_back(u.numel);
  std::sort(sizes.rbegin(), sizes.rend());
  int64_t scatter_outputs = 0;
  for (size_t i = 0; i < std::min<size_t>(2, sizes.size()); ++i) {
    scatter_outputs += 4 * ((sizes[i] + n - 1) / n);
  }
  switch (options.zero_stage) {
    case 0:
      plan.gradients = 4 * padded + transient_grad;
      plan.optimizer = 12 * shard;
      break;
    case 1:
      // The optimizer step takes a copy of this rank's shard of the all-reduced buffer.
      plan.gradients = 4 * padded + 4 * shard + transient_grad;
      plan.optimizer = 12 * shard;
      break;
    case 2: {
      // One bucket being filled and two in flight, each a bucket of fp32 (GradientSync).
      int64_t in_flight = 0;
      for (size_t i = 0; i < std::min<size_t>(3, sizes.size()); ++i) in_flight += 4 * sizes[i];
      plan.gradients = 4 * shard + in_flight + scatter_outputs + transient_grad;
      plan.optimizer = 12 * shard;
      break;
    }
    default:
      // Only the root unit is whole between steps; each other unit is gathered around its
      // forward and its recompute. At most three units are gathered at once (the one
      // running, the prefetched one, one whose gradients are being reduced), each with its
      // staged fp32 gradient, and the root's fp32 gradient fills during the whole backward.
      plan.parameters = frozen_bytes + b * plan.root_unit;
      plan.gradients =
          4 * shard + 4 * plan.root_unit + 3 * 4 * largest + scatter_outputs + transient_grad;
      plan.optimizer = 12 * shard;
      plan.gathered = 3 * b * largest;
      break;
  }

  const bool llm_path = contains(trainable, "llm") || contains(trainable, "mm_projector");
  plan.activations =
      estimate_activations(read_shapes(*model), options, llm_path, !trainable.empty());
  plan.total = plan.parameters + plan.gradients + plan.optimizer + plan.gathered + plan.buffers +
               plan.activations.peak;
  return plan;
}

const std::vector<GpuCapacity>& plan_gpus() {
  // Total memory as nvidia-smi reports it (MiB).
  static const std::vector<GpuCapacity> gpus = {{"A100-40GB", int64_t{40960} << 20},
                                                {"A100-80GB", int64_t{81920} << 20},
                                                {"H100-80GB", int64_t{81559} << 20},
                                                {"H200-141GB", int64_t{143771} << 20}};
  return gpus;
}

nlohmann::ordered_json plan_json(const MemoryPlan& plan) {
  using J = nlohmann::ordered_json;
  const PlanOptions& o = plan.options;
  J modules = J::array();
  for (const ModulePlanCount& m : plan.modules) {
    modules.push_back({{"name", m.name},
                       {"parameters", m.parameters},
                       {"buffers", m.buffers},
                       {"trainable", m.trainable}});
  }
  const bool fsdp = o.zero_stage == 3;
  J units = {{"kind", fsdp ? "fsdp_units" : "gradient_buckets"},
             {"count", plan.units.size()},
             {"largest", {{"name", plan.largest_unit.name}, {"numel", plan.largest_unit.numel}}}};
  if (fsdp) units["root_numel"] = plan.root_unit;

  const std::vector<std::pair<const char*, int64_t>> parts = {
      {"parameters", plan.parameters},
      {"gradients", plan.gradients},
      {"optimizer_state", plan.optimizer},
      {"gathered_parameters", plan.gathered},
      {"buffers", plan.buffers},
      {"activations_estimate", plan.activations.peak},
      {"total", plan.total}};
  J bytes = J::object(), gibs = J::object();
  for (const auto& [name, value] : parts) {
    bytes[name] = value;
    gibs[name] = gib(value);
  }
  const ActivationEstimate& a = plan.activations;
  J activations = {
      {"estimate", true},
      {"assumptions",
       "saved tensors counted from the layer shapes; fused SDPA attention keeping a [B, 1, L, L] "
       "mask bias per layer; the frozen tower encodes under no_grad (not counted); the heads "
       "run backward before the decoder layers"},
      {"visual_positions_per_sample", a.visual_positions},
      {"checkpointed_layer_inputs", a.checkpointed_inputs},
      {"decoder_layers", a.llm_layers},
      {"decoder_layer_backward", a.llm_layer_backward},
      {"heads", a.heads},
      {"whole_step", a.whole_step},
      {"peak", a.peak}};
  J fits = J::object();
  for (const GpuCapacity& g : plan_gpus()) {
    fits[g.name] = static_cast<double>(plan.total) <= kPlanHeadroom * static_cast<double>(g.bytes);
  }
  return {{"model", plan.model_name},
          {"world_size", o.world_size},
          {"zero_stage", o.zero_stage},
          {"micro_batch", o.micro_batch},
          {"seq_len", o.seq_len},
          {"activation_checkpointing", o.activation_checkpointing},
          {"dtype", o.dtype == at::kBFloat16 ? "bf16" : "fp32"},
          {"bucket_mb", o.bucket_mb},
          {"trainable", o.trainable},
          {"parameters",
           {{"trainable", plan.trainable_parameters},
            {"frozen", plan.frozen_parameters},
            {"buffer_elements", plan.buffer_elements},
            {"modules", modules},
            {"units", units}}},
          {"bytes_per_rank", bytes},
          {"gib_per_rank", gibs},
          {"activations", activations},
          {"headroom_rule", "fits when total <= " + c10::str(kPlanHeadroom) +
                                " x the GPU's memory (CUDA context, NCCL buffers, allocator "
                                "fragmentation)"},
          {"fits", fits}};
}

}  // namespace vilau
