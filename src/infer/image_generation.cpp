#include "vilau/infer/image_generation.h"

#include <torch/cuda.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <limits>

#include "vilau/core/error.h"
#include "vilau/core/linear.h"
#include "vilau/infer/batching.h"
#include "vilau/tokenizer/conversation.h"
#include "vilau/tokenizer/tokenizer.h"
#include "vilau/vision/preprocess.h"

namespace vilau {

namespace {

using Clock = std::chrono::steady_clock;

// Kernels run asynchronously on a GPU; a time taken without waiting for them means nothing.
// Waiting for the GPU at every step would stall the host's run-ahead, so parts are timed
// only when a benchmark asks for it.
double seconds_since(Clock::time_point start, at::Device device, bool profile) {
  if (!profile) return 0.0;
  if (device.is_cuda()) torch::cuda::synchronize(device.index() < 0 ? 0 : device.index());
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Codes [N, ...] chosen for the conditional rows, repeated onto the unconditional ones.
at::Tensor to_all_rows(const at::Tensor& chosen, const ImageOptions& options) {
  if (!options.unconditional) return chosen;
  return options.layout == CfgLayout::halves ? at::cat({chosen, chosen})
                                             : chosen.repeat_interleave(2, 0);
}

}  // namespace

CfgLayout parse_cfg_layout(const std::string& name) {
  if (name == "halves") return CfgLayout::halves;
  if (name == "interleaved") return CfgLayout::interleaved;
  throw ConfigError(describe("--cfg-layout", "unknown layout", "halves or interleaved", name));
}

at::Tensor combine_cfg(const at::Tensor& logits, double scale, CfgLayout layout,
                       double plausibility) {
  if (logits.dim() != 2 || logits.size(0) % 2 != 0) {
    throw ShapeError(
        describe("classifier-free guidance", "logits", "[2N, K]", c10::str(logits.sizes())));
  }
  const int64_t n = logits.size(0) / 2;
  const at::Tensor cond =
      layout == CfgLayout::halves ? window(logits, 0, 0, n) : logits.slice(0, 0, 2 * n, 2);
  if (scale == 1.0) return cond;  // exactly the conditional logits, no rounding
  const at::Tensor uncond =
      layout == CfgLayout::halves ? window(logits, 0, n, n) : logits.slice(0, 1, 2 * n, 2);
  const auto fp32 = [](const at::Tensor& x) {
    return x.scalar_type() == at::kFloat ? x : x.to(at::kFloat);
  };
  const at::Tensor c = fp32(cond), u = fp32(uncond);
  at::Tensor guided = u + scale * (c - u);
  if (plausibility > 0.0) {
    // p_k < a * max p  <=>  logit_k < max logit + log a: no softmax needed.
    const at::Tensor floor = std::get<0>(c.max(1, true)) + std::log(plausibility);
    guided = guided.masked_fill(c < floor, -std::numeric_limits<float>::infinity());
  }
  return guided;
}

void ImageOptions::validate() const {
  sampler.validate("image sampler");
  if (!(cfg_plausibility >= 0.0 && cfg_plausibility < 1.0)) {
    throw ConfigError(describe("--cfg-plausibility", "invalid plausibility cut",
                               "a value in [0, 1) (0: off)", std::to_string(cfg_plausibility)));
  }
  if (!(cfg_scale >= 0.0)) {
    throw ConfigError(describe("--cfg", "invalid guidance scale",
                               "a value >= 0 (1: conditional only)", std::to_string(cfg_scale)));
  }
  if (frames < 0) {
    throw ConfigError(describe("--frames", "invalid frame count", "a count >= 0 (0: an image)",
                               std::to_string(frames)));
  }
}

ImageSession::ImageSession(VilaUImpl& model, const std::vector<std::vector<int64_t>>& cond,
                           const std::vector<int64_t>& uncond, const ImageOptions& options,
                           at::Generator& generator, GenerationTimes& times)
    : model_(model), options_(options), generator_(generator), times_(times) {
  options_.validate();
  if (cond.empty()) {
    throw ConfigError(describe("generation", "prompts", "at least one", "none"));
  }
  torch::NoGradGuard no_grad;
  n_ = static_cast<int64_t>(cond.size());
  positions_ = model_.tokens_per_image() * std::max<int64_t>(options_.frames, 1);
  std::vector<std::vector<int64_t>> rows;
  for (int64_t i = 0; i < n_; ++i) {
    rows.push_back(cond[i]);
    if (options_.unconditional && options_.layout == CfgLayout::interleaved) rows.push_back(uncond);
  }
  if (options_.unconditional && options_.layout == CfgLayout::halves) {
    rows.insert(rows.end(), n_, uncond);
  }
  check_context(rows, model_, positions_, "generation prompt");

  LlamaForCausalLMImpl& llm = *model_.llm;
  const at::Tensor weight = llm.model->embed_tokens->weight;
  const at::Device device = weight.device();
  const auto start = Clock::now();
  // Official padding: id 0 on the left.
  const ExpandedInputs in = model_.expand(left_padded_batch(rows, 0, device), Padding::left);
  batch_ = static_cast<int64_t>(rows.size());
  llm_ = std::make_unique<LlmSequence>(llm, in, positions_, options_.llm_cache);
  hidden_ = llm_->prefilled().clone();  // a buffer of its own, rewritten in place
  times_.llm_tokens += in.attention_mask.numel();
  times_.prefill += seconds_since(start, device, options_.profile);

  // One product for each block's query, key and value from here on (D of them a position).
  if (options_.depth_cache) model_.depth_transformer->fuse_projections();
  const auto longs = weight.options().dtype(at::kLong);
  const int64_t depth = model_.depth_transformer->depth();
  codes_ = at::empty({n_, positions_, depth}, longs);
  chosen_ = at::empty({n_, depth}, longs);
  column_ = at::zeros({1}, longs);
  graph_ = std::make_unique<StepGraph>(
      options_.cuda_graphs && options_.llm_cache && options_.depth_cache, device, generator_);
}

ImageSession::~ImageSession() = default;

void ImageSession::step() {
  if (done()) {
    throw ShapeError(describe("image generation", "step", "at most " + std::to_string(positions_),
                              std::to_string(positions_ + 1)));
  }
  torch::NoGradGuard no_grad;
  const at::Device device = hidden_.device();
  const bool last = position_ + 1 == positions_;  // its state would predict nothing
  auto start = Clock::now();
  if (graph_->active() && !last) {
    const bool replayed = graph_->run([this] {
      sample_position();
      advance_llm();
    });
    if (replayed) llm_->count_replayed_step();
    times_.graph += seconds_since(start, device, options_.profile);
  } else {
    sample_position();
    times_.depth += seconds_since(start, device, options_.profile);
    if (!last) {
      start = Clock::now();
      advance_llm();
      times_.llm += seconds_since(start, device, options_.profile);
    }
  }
  if (!last) times_.llm_tokens += batch_;
  ++position_;
}

void ImageSession::sample_position() {
  DepthTransformerImpl& depth_model = *model_.depth_transformer;
  ResidualQuantizerImpl& quantizer = *model_.vision_tower->quantizer;
  const int64_t depth = depth_model.depth();
  const at::ScalarType dtype = hidden_.scalar_type();
  depth_cache_.clear();
  // Without the cache: the official full recompute, later depths' inputs left at zero since
  // the causal mask keeps them from the depth being sampled.
  at::Tensor prefix;
  if (!options_.depth_cache) {
    prefix = at::zeros({hidden_.size(0), depth - 1, quantizer.embed_dim()}, hidden_.options());
  }
  at::Tensor sum;
  for (int64_t d = 0; d < depth; ++d) {
    const at::Tensor logits = options_.depth_cache
                                  ? depth_model.step(d == 0 ? hidden_ : sum, depth_cache_)
                                  : depth_model.forward(hidden_, prefix).select(1, d);
    const at::Tensor guided =
        options_.unconditional
            ? combine_cfg(logits, options_.cfg_scale, options_.layout, options_.cfg_plausibility)
            : logits;
    const at::Tensor code = sample_tokens(guided, options_.sampler, generator_);
    chosen_.select(1, d).copy_(code);
    // The sums feed the next depth and, once all D codes are in, the LLM's next input.
    at::Tensor e = quantizer.codebook(d)->codes().index_select(0, to_all_rows(code, options_));
    if (e.scalar_type() != dtype) e = e.to(dtype);
    sum = d == 0 ? e : sum + e;
    if (prefix.defined() && d + 1 < depth) prefix.select(1, d).copy_(sum);
  }
  code_sum_ = sum;
  codes_.index_copy_(1, column_, chosen_.unsqueeze(1));
  column_.add_(1);
}

void ImageSession::advance_llm() {
  at::Tensor x = model_.embed_code_sum(code_sum_);
  if (x.scalar_type() != hidden_.scalar_type()) x = x.to(hidden_.scalar_type());
  hidden_.copy_(llm_->step(x));
}

ImageGenerator::ImageGenerator(VilaU model) : model_(std::move(model)) {}

at::Tensor ImageGenerator::generate_codes(const std::vector<std::vector<int64_t>>& cond,
                                          const std::vector<int64_t>& uncond,
                                          const ImageOptions& options, at::Generator& generator) {
  ImageSession session(*model_, cond, uncond, options, generator, times_);
  while (!session.done()) session.step();
  const int64_t grid = model_->config().vision_tower.vision.grid();
  std::vector<int64_t> shape = {static_cast<int64_t>(cond.size()), grid, grid,
                                session.codes().size(2)};
  if (options.frames > 0) shape.insert(shape.begin() + 1, options.frames);
  return session.codes().view(shape);
}

at::Tensor ImageGenerator::decode(const at::Tensor& codes, int64_t batch) {
  torch::NoGradGuard no_grad;
  const auto start = Clock::now();
  const at::Device device = model_->llm->model->embed_tokens->weight.device();
  const at::Tensor flat = codes.flatten(0, codes.dim() - 4);
  std::vector<at::Tensor> pixels;
  for (int64_t i = 0; i < flat.size(0); i += batch) {
    const at::Tensor chunk = flat.narrow(0, i, std::min(batch, flat.size(0) - i)).to(device);
    pixels.push_back(postprocess_image(model_->vision_tower->decode_codes(chunk)).cpu());
  }
  at::Tensor out = at::cat(pixels);
  std::vector<int64_t> shape(codes.sizes().begin(), codes.sizes().end() - 3);
  shape.insert(shape.end(), {out.size(1), out.size(2), 3});
  times_.decode += seconds_since(start, device, true);  // .cpu() has waited already
  return out.view(shape);
}

std::vector<int64_t> generation_prompt_ids(const Tokenizer& tokenizer, const std::string& prompt,
                                           bool video) {
  return tokenizer.encode(video ? text_to_video_prompt(prompt) : text_to_image_prompt(prompt));
}

std::vector<int64_t> unconditional_prompt_ids(const Tokenizer& tokenizer, bool video) {
  return tokenizer.encode(video ? text_to_video_prompt(" ") : text_to_image_unconditional_prompt());
}

}  // namespace vilau
