#include "vilau/model/vila_u.h"

#include <torch/torch.h>

#include <algorithm>

#include "vilau/core/error.h"
#include "vilau/model/official_checkpoint.h"
#include "vilau/tokenizer/conversation.h"
#include "vilau/tokenizer/tokenizer.h"

namespace vilau {

namespace {

void check_batch(const MultimodalBatch& batch) {
  const at::Tensor& ids = batch.input_ids;
  if (!ids.defined() || ids.dim() != 2 || ids.scalar_type() != at::kLong) {
    throw ShapeError(
        describe("multimodal batch", "input_ids", "int64 [B, T]",
                 ids.defined() ? c10::str(ids.sizes(), " ", ids.scalar_type()) : "undefined"));
  }
  const auto same_shape = [&ids](const at::Tensor& t, const char* name) {
    if (t.defined() && t.sizes() != ids.sizes()) {
      throw ShapeError(
          describe("multimodal batch", name, c10::str(ids.sizes()), c10::str(t.sizes())));
    }
  };
  if (!batch.attention_mask.defined()) {
    throw ShapeError(
        describe("multimodal batch", "attention_mask", c10::str(ids.sizes()), "undefined"));
  }
  same_shape(batch.attention_mask, "attention_mask");
  same_shape(batch.labels, "labels");
  same_shape(batch.segment_ids, "segment_ids");
}

std::vector<int64_t> row_values(const at::Tensor& t, int64_t row, const at::Tensor& keep) {
  const at::Tensor values = t[row].index({keep[row]}).contiguous();
  return {values.data_ptr<int64_t>(), values.data_ptr<int64_t>() + values.numel()};
}

// The mean cross-entropy in fp32, or a zero that keeps the loss well defined when a batch
// has no targets of that kind (the official code would return NaN).
at::Tensor mean_cross_entropy(const at::Tensor& logits, const at::Tensor& targets) {
  if (targets.numel() == 0) {
    return at::zeros({}, logits.options().dtype(at::kFloat));
  }
  return torch::nn::functional::cross_entropy(logits.to(at::kFloat), targets);
}

}  // namespace

void LossWeights::validate(const std::string& path) const {
  config_check(text >= 0.0, path + ".text", "a weight >= 0", std::to_string(text));
  config_check(visual >= 0.0, path + ".visual", "a weight >= 0", std::to_string(visual));
}

std::vector<VisualSpan> visual_spans(const at::Tensor& labels0, int64_t vocab_size,
                                     int64_t tokens_per_image) {
  const at::Tensor labels = labels0.to(at::kCPU, at::kLong).contiguous();
  const auto acc = labels.accessor<int64_t, 2>();
  std::vector<VisualSpan> spans;
  for (int64_t row = 0; row < labels.size(0); ++row) {
    // The official loss pairs the i-th start with the i-th end, images and videos apart.
    for (const int64_t start_id : {vocab_size - 4, vocab_size - 2}) {
      std::vector<int64_t> starts, ends;
      for (int64_t t = 0; t < labels.size(1); ++t) {
        if (acc[row][t] == start_id) starts.push_back(t);
        if (acc[row][t] == start_id + 1) ends.push_back(t);
      }
      if (starts.size() != ends.size()) {
        throw ShapeError(describe(
            "visual loss", "row " + std::to_string(row) + " labels", "as many start as end markers",
            std::to_string(starts.size()) + " starts, " + std::to_string(ends.size()) + " ends"));
      }
      for (size_t i = 0; i < starts.size(); ++i) {
        for (int64_t s = starts[i] + 1; s < ends[i]; s += tokens_per_image) {
          spans.push_back({row, s, std::min(tokens_per_image, ends[i] - s)});
        }
      }
    }
  }
  return spans;
}

VilaUImpl::VilaUImpl(const ModelConfig& config) : config_(config) {
  config_.validate("model");
  const VisionTowerConfig& v = config_.vision_tower;
  vision_tower = register_module("vision_tower", VisionTower(v));
  mm_projector = register_module(
      "mm_projector", MultimodalProjector(v.vision.hidden_size, config_.llm.hidden_size));
  llm = register_module("llm", LlamaForCausalLM(config_.llm));
  depth_transformer = register_module(
      "depth_transformer",
      DepthTransformer(config_.depth_transformer, v.quantizer.depth, v.quantizer.codebook_size,
                       v.vision.hidden_size, config_.llm.hidden_size));
  for (at::Tensor& p : vision_tower->parameters()) {
    p.requires_grad_(false);
  }
  vision_tower->eval();
}

void VilaUImpl::train(bool on) {
  torch::nn::Module::train(on);
  vision_tower->eval();
}

int64_t VilaUImpl::tokens_per_image() const {
  const int64_t grid = config_.vision_tower.vision.grid();
  return grid * grid;
}

void VilaUImpl::load(const TensorLookup& lookup) {
  load_module(*llm, lookup, "llm.");
  load_module(*mm_projector, lookup, "mm_projector.");
  load_module(*depth_transformer, lookup, "vision_tower.rqtransformer.");
  vision_tower->load([&lookup](const std::string& name) { return lookup("vision_tower." + name); });
}

std::map<std::string, at::Tensor> VilaUImpl::official_state_dict() {
  std::map<std::string, at::Tensor> out;
  add_module_tensors(out, "llm.", *llm);
  add_module_tensors(out, "mm_projector.", *mm_projector);
  add_module_tensors(out, "vision_tower.rqtransformer.", *depth_transformer);
  for (auto& [name, t] : vision_tower->official_state_dict()) {
    out["vision_tower." + name] = t.detach();
  }
  return out;
}

std::string VilaUImpl::official_name(const std::string& name) {
  const std::string depth = "depth_transformer.";
  if (name.rfind(depth, 0) == 0) return "vision_tower.rqtransformer." + name.substr(depth.size());
  return name;
}

at::Tensor VilaUImpl::encode_images(const at::Tensor& pixels) {
  torch::NoGradGuard no_grad;
  const at::Tensor weight = vision_tower->quantizer->parameters().front();
  return vision_tower->encode(pixels.to(weight.device(), weight.scalar_type())).codes;
}

at::Tensor VilaUImpl::embed_codes(const at::Tensor& codes) {
  at::Tensor sum;
  {
    torch::NoGradGuard no_grad;  // the tower's codebooks are frozen
    sum = vision_tower->quantizer->embed_codes(codes).sum;
  }
  return embed_code_sum(sum);
}

at::Tensor VilaUImpl::embed_code_sum(const at::Tensor& sum) {
  const at::Tensor weight = mm_projector->layers->parameters().front();
  const at::Tensor input =
      sum.scalar_type() == weight.scalar_type() ? sum : sum.to(weight.scalar_type());
  if (projector_wrapper_ && is_training()) {
    return projector_wrapper_(0, [this](const at::Tensor& x) { return mm_projector(x); }, input);
  }
  return mm_projector(input);
}

at::Tensor VilaUImpl::code_prefix_sums(const at::Tensor& codes) {
  torch::NoGradGuard no_grad;
  return vision_tower->quantizer->embed_codes(codes).per_depth.cumsum(-2);
}

ExpandedInputs VilaUImpl::expand(const MultimodalBatch& batch, Padding padding) {
  check_batch(batch);
  const int64_t rows = batch.input_ids.size(0), steps = batch.input_ids.size(1);
  const int64_t vocab = config_.llm.vocab_size, depth = config_.vision_tower.quantizer.depth;
  const int64_t hw = tokens_per_image();
  const at::Device device = batch.input_ids.device();
  const at::Tensor ids = batch.input_ids.cpu();
  const at::Tensor keep = batch.attention_mask.cpu().ne(0);
  const at::Tensor labels =
      batch.labels.defined() ? batch.labels.cpu().to(at::kLong) : at::Tensor();
  const int64_t images = ids.eq(kImageTokenIndex).logical_and(keep).sum().item<int64_t>();

  at::Tensor codes;
  if (images > 0) {
    codes = batch.image_codes.defined() ? batch.image_codes : encode_images(batch.images);
    const std::vector<int64_t> expected = {images, config_.vision_tower.vision.grid(),
                                           config_.vision_tower.vision.grid(), depth};
    if (codes.sizes() != at::IntArrayRef(expected)) {
      throw ShapeError(describe("multimodal batch", "image codes (one per placeholder)",
                                c10::str(at::IntArrayRef(expected)), c10::str(codes.sizes())));
    }
  }

  // One table holds every row the sequence can take: text embeddings, image positions and
  // a zero row for padding; the expanded batch is a single gather from it.
  const at::Tensor text = llm->embed(batch.input_ids.clamp_min(0)).flatten(0, 1);
  std::vector<at::Tensor> table = {text};
  if (images > 0) {
    table.push_back(embed_codes(codes.to(device)).flatten(0, 2).to(text.scalar_type()));
  }
  table.push_back(at::zeros({1, text.size(1)}, text.options()));
  const int64_t pad_row = rows * steps + images * hw;

  const at::Tensor codes_cpu = images > 0 ? codes.cpu().to(at::kLong).contiguous() : at::Tensor();
  // Per row: where each position's input comes from, its labels, its sample (segment)
  // and its position within the sample.
  std::vector<std::vector<int64_t>> sources(rows), targets(rows), segments(rows), offsets(rows);
  const at::Tensor segment_of =
      batch.segment_ids.defined() ? batch.segment_ids.cpu().to(at::kLong) : keep.to(at::kLong);
  const at::Tensor columns = at::arange(steps).expand({rows, steps});
  int64_t image = 0;
  for (int64_t b = 0; b < rows; ++b) {
    const std::vector<int64_t> row_ids = row_values(ids, b, keep);
    const std::vector<int64_t> row_labels =
        labels.defined() ? row_values(labels, b, keep) : std::vector<int64_t>();
    const std::vector<int64_t> row_segments = row_values(segment_of, b, keep);
    const std::vector<int64_t> positions = row_values(columns, b, keep);
    // The target rule looks at the end of each sample, so it runs sample by sample.
    for (size_t begin = 0, end = 0; begin < row_ids.size(); begin = end) {
      while (end < row_ids.size() && row_segments[end] == row_segments[begin]) ++end;
      std::vector<bool> is_target;
      if (labels.defined()) {
        is_target = generation_targets({{row_ids.begin() + begin, row_ids.begin() + end},
                                        {row_labels.begin() + begin, row_labels.begin() + end}},
                                       vocab - 4);
      }
      size_t placeholder = 0;
      int64_t offset = 0;
      for (size_t i = begin; i < end; ++i) {
        if (row_ids[i] != kImageTokenIndex) {
          sources[b].push_back(b * steps + positions[i]);
          segments[b].push_back(row_segments[i]);
          offsets[b].push_back(offset++);
          if (labels.defined()) targets[b].insert(targets[b].end(), depth, row_labels[i]);
          continue;
        }
        const bool target = labels.defined() && is_target[placeholder++];
        const int64_t* code = codes_cpu.data_ptr<int64_t>() + image * hw * depth;
        for (int64_t p = 0; p < hw; ++p) {
          sources[b].push_back(rows * steps + image * hw + p);
          segments[b].push_back(row_segments[i]);
          offsets[b].push_back(offset++);
          for (int64_t d = 0; d < depth && labels.defined(); ++d) {
            targets[b].push_back(target ? code[p * depth + d] + vocab : kIgnoreIndex);
          }
        }
        ++image;
      }
    }
  }

  int64_t length = 0;
  for (const auto& s : sources) length = std::max<int64_t>(length, static_cast<int64_t>(s.size()));
  const auto limit = static_cast<int64_t>(static_cast<double>(config_.llm.max_position_embeddings) *
                                          config_.llm.rope_scaling_factor);
  if (length > limit) {
    throw ShapeError(describe("multimodal batch", "sequence length after expanding images",
                              "at most " + std::to_string(limit) + " positions",
                              std::to_string(length)));
  }
  at::Tensor index = at::full({rows, length}, pad_row, at::kLong);
  at::Tensor mask = at::zeros({rows, length}, at::kLong);
  at::Tensor position_ids = at::ones({rows, length}, at::kLong);  // pads at 1, as HF
  at::Tensor out_labels =
      labels.defined() ? at::full({rows, length, depth}, kIgnoreIndex, at::kLong) : at::Tensor();
  for (int64_t b = 0; b < rows; ++b) {
    const auto n = static_cast<int64_t>(sources[b].size());
    const int64_t from = padding == Padding::left ? length - n : 0;
    index[b].slice(0, from, from + n).copy_(at::tensor(sources[b], at::kLong));
    mask[b].slice(0, from, from + n).copy_(at::tensor(segments[b], at::kLong));
    position_ids[b].slice(0, from, from + n).copy_(at::tensor(offsets[b], at::kLong));
    if (labels.defined()) {
      out_labels[b]
          .slice(0, from, from + n)
          .copy_(at::tensor(targets[b], at::kLong).view({n, depth}));
    }
  }
  ExpandedInputs out;
  out.inputs_embeds =
      at::cat(table).index_select(0, index.flatten().to(device)).view({rows, length, -1});
  out.causal = mask.eq(1).all().item<bool>();  // on the host: no device synchronisation
  out.attention_mask = mask.to(device);
  out.position_ids = position_ids.to(device);
  if (labels.defined()) out.labels = out_labels.to(device);
  return out;
}

VilaULoss VilaUImpl::loss(const MultimodalBatch& batch, const LossWeights& weights) {
  if (!batch.labels.defined()) {
    throw ShapeError(
        describe("multimodal batch", "labels", "int64 [B, T] for a loss", "undefined"));
  }
  return loss(expand(batch), weights);
}

VilaULoss VilaUImpl::loss(const ExpandedInputs& inputs, const LossWeights& weights) {
  const int64_t vocab = config_.llm.vocab_size, depth = config_.vision_tower.quantizer.depth;
  const at::Tensor hidden = llm->hidden_states(inputs.inputs_embeds, inputs.position_ids,
                                               inputs.attention_mask, nullptr, inputs.causal);
  const int64_t rows = hidden.size(0), length = hidden.size(1);
  const at::Tensor flat_hidden = hidden.flatten(0, 1);
  const at::Tensor labels0 = inputs.labels.select(2, 0).cpu().contiguous();
  const auto label_at = labels0.accessor<int64_t, 2>();
  const std::vector<VisualSpan> spans = visual_spans(labels0, vocab, tokens_per_image());

  // Text: every label the LLM vocabulary can hold, outside the visual spans. lm_head only
  // runs where a target is, which for image batches is a small share of the positions.
  at::Tensor text_labels = labels0.masked_fill(labels0.ge(vocab), kIgnoreIndex);
  std::vector<int64_t> hidden_rows, label_rows;
  for (const VisualSpan& s : spans) {
    text_labels[s.row].slice(0, s.start, s.start + s.length).fill_(kIgnoreIndex);
    for (int64_t p = s.start; p < s.start + s.length; ++p) {
      if (label_at[s.row][p] >= vocab) {
        hidden_rows.push_back(s.row * length + p - 1);
        label_rows.push_back(s.row * length + p);
      }
    }
  }
  at::Tensor predicted = at::zeros({rows, length}, at::kBool);
  const at::Tensor segments = inputs.attention_mask.cpu();
  predicted.slice(1, 0, length - 1)
      .copy_(text_labels.slice(1, 1).ne(kIgnoreIndex) &
             segments.slice(1, 1).eq(segments.slice(1, 0, length - 1)));
  const at::Tensor text_positions = predicted.flatten().nonzero().flatten();
  const at::Tensor text_targets =
      text_labels.flatten().index_select(0, text_positions + 1).to(hidden.device());

  VilaULoss out;
  out.text_targets = text_targets.numel();
  out.text_loss = mean_cross_entropy(
      llm->logits(flat_hidden.index_select(0, text_positions.to(hidden.device()))), text_targets);

  out.visual_targets = static_cast<int64_t>(label_rows.size());
  if (out.visual_targets > 0) {
    const at::Tensor codes =
        inputs.labels.flatten(0, 1).index_select(0, at::tensor(label_rows).to(hidden.device())) -
        vocab;
    const at::Tensor prefix = code_prefix_sums(codes).slice(-2, 0, depth - 1);
    const at::Tensor state =
        flat_hidden.index_select(0, at::tensor(hidden_rows).to(hidden.device()));
    const at::Tensor logits = depth_transformer(state, prefix.to(state.scalar_type()));
    out.visual_loss = mean_cross_entropy(logits.flatten(0, 1), codes.flatten());
  } else if (is_training()) {
    // No targets here: the depth transformer still runs, on one row weighted by zero, so
    // that every data-parallel rank runs the same modules (ZeRO-3 gathers each block's
    // weights collectively) and produces their (zero) gradients during backward.
    const at::Tensor state = flat_hidden.narrow(0, 0, 1);
    const at::Tensor prefix =
        at::zeros({1, depth - 1, depth_transformer->code_dim()}, state.options());
    out.visual_loss = depth_transformer(state, prefix).sum().to(at::kFloat) * 0.0;
  } else {
    out.visual_loss = at::zeros({}, hidden.options().dtype(at::kFloat));
  }
  out.loss = out.text_loss * weights.text + out.visual_loss * weights.visual;
  return out;
}

VilaU load_vila_u(const std::string& root, at::ScalarType dtype, at::Device device) {
  const OfficialCheckpoint checkpoint = OfficialCheckpoint::open(root);
  const TensorCheck check = checkpoint.check();
  if (!check.ok()) {
    throw ShapeError(
        describe(root, "checkpoint tensors", "those its config implies", check.summary()));
  }
  const caffe2::TypeMeta previous = c10::get_default_dtype();
  c10::set_default_dtype(c10::scalarTypeToTypeMeta(dtype));
  VilaU model{nullptr};
  try {
    model = VilaU(checkpoint.config());
  } catch (...) {
    c10::set_default_dtype(previous);
    throw;
  }
  c10::set_default_dtype(previous);
  model->load([&checkpoint](const std::string& name) {
    try {
      return checkpoint.tensor(name);
    } catch (const Error&) {
      return at::Tensor();  // load_module reports it by name
    }
  });
  model->to(device);
  model->eval();
  return model;
}

}  // namespace vilau
