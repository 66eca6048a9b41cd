#include "vilau/infer/image_generation.h"

#include <torch/cuda.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <limits>

#include "vilau/core/error.h"
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
      layout == CfgLayout::halves ? logits.narrow(0, 0, n) : logits.slice(0, 0, 2 * n, 2);
  if (scale == 1.0) return cond;  // exactly the conditional logits, no rounding
  const at::Tensor uncond =
      layout == CfgLayout::halves ? logits.narrow(0, n, n) : logits.slice(0, 1, 2 * n, 2);
  const at::Tensor c = cond.to(at::kFloat), u = uncond.to(at::kFloat);
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

ImageGenerator::ImageGenerator(VilaU model) : model_(std::move(model)) {}

at::Tensor ImageGenerator::sample_position(const at::Tensor& hidden, const ImageOptions& options,
                                           at::Generator& generator, int64_t n) {
  DepthTransformerImpl& depth_model = *model_->depth_transformer;
  ResidualQuantizerImpl& quantizer = *model_->vision_tower->quantizer;
  const int64_t depth = depth_model.depth(), rows = hidden.size(0);
  DepthKvCache cache;
  at::Tensor chosen = at::empty({n, depth}, hidden.options().dtype(at::kLong));
  at::Tensor sum;
  // Without the cache: the official full recompute, later depths' inputs left at zero since
  // the causal mask keeps them from the depth being sampled.
  at::Tensor prefix;
  if (!options.depth_cache) {
    prefix = at::zeros({rows, depth - 1, quantizer.embed_dim()}, hidden.options());
  }
  for (int64_t d = 0; d < depth; ++d) {
    const at::Tensor logits = options.depth_cache
                                  ? depth_model.step(d == 0 ? hidden : sum, cache)
                                  : depth_model.forward(hidden, prefix).select(1, d);
    const at::Tensor guided =
        options.unconditional
            ? combine_cfg(logits, options.cfg_scale, options.layout, options.cfg_plausibility)
            : logits;
    const at::Tensor code = sample_tokens(guided, options.sampler, generator);
    chosen.select(1, d).copy_(code);
    if (d + 1 < depth) {
      const at::Tensor e =
          quantizer.codebook(d)->codes().index_select(0, to_all_rows(code, options));
      sum = d == 0 ? e.to(hidden.scalar_type()) : sum + e.to(hidden.scalar_type());
      if (prefix.defined()) prefix.select(1, d).copy_(sum);
    }
  }
  return chosen;
}

at::Tensor ImageGenerator::generate_codes(const std::vector<std::vector<int64_t>>& cond,
                                          const std::vector<int64_t>& uncond,
                                          const ImageOptions& options, at::Generator& generator) {
  options.validate();
  if (cond.empty()) {
    throw ConfigError(describe("generation", "prompts", "at least one", "none"));
  }
  torch::NoGradGuard no_grad;
  const auto n = static_cast<int64_t>(cond.size());
  const int64_t frames = std::max<int64_t>(options.frames, 1);
  const int64_t steps = model_->tokens_per_image() * frames;
  std::vector<std::vector<int64_t>> rows;
  for (int64_t i = 0; i < n; ++i) {
    rows.push_back(cond[i]);
    if (options.unconditional && options.layout == CfgLayout::interleaved) rows.push_back(uncond);
  }
  if (options.unconditional && options.layout == CfgLayout::halves) {
    rows.insert(rows.end(), n, uncond);
  }
  check_context(rows, *model_, steps, "generation prompt");

  LlamaForCausalLMImpl& llm = *model_->llm;
  const at::Tensor weight = llm.model->embed_tokens->weight;
  const at::Device device = weight.device();
  auto start = Clock::now();
  // Official padding: id 0 on the left.
  const ExpandedInputs in = model_->expand(left_padded_batch(rows, 0, device), Padding::left);
  const auto batch = static_cast<int64_t>(rows.size());
  KvCache cache(llm.config(), batch, in.inputs_embeds.size(1) + steps, weight.scalar_type(),
                device);
  KvCache* used = options.llm_cache ? &cache : nullptr;
  at::Tensor embeds = in.inputs_embeds, positions = in.position_ids, mask = in.attention_mask;
  at::Tensor hidden = llm.hidden_states(embeds, positions, mask, used).select(1, -1);
  times_.llm_tokens += mask.numel();
  times_.prefill += seconds_since(start, device, options.profile);

  at::Tensor codes =
      at::empty({n, steps, model_->depth_transformer->depth()}, weight.options().dtype(at::kLong));
  for (int64_t t = 0; t < steps; ++t) {
    start = Clock::now();
    const at::Tensor chosen = sample_position(hidden, options, generator, n);
    codes.select(1, t).copy_(chosen);
    times_.depth += seconds_since(start, device, options.profile);
    if (t + 1 == steps) break;  // the last position's state would predict nothing
    start = Clock::now();
    const at::Tensor x =
        model_->embed_codes(to_all_rows(chosen, options).unsqueeze(1)).to(weight.scalar_type());
    const at::Tensor position = positions.select(1, -1).unsqueeze(1) + 1;
    mask = at::cat({mask, at::ones({batch, 1}, mask.options())}, 1);
    if (options.llm_cache) {
      positions = position;
      hidden = llm.hidden_states(x, position, mask, &cache).select(1, -1);
    } else {
      embeds = at::cat({embeds, x}, 1);
      positions = at::cat({positions, position}, 1);
      hidden = llm.hidden_states(embeds, positions, mask).select(1, -1);
    }
    times_.llm_tokens += batch;
    times_.llm += seconds_since(start, device, options.profile);
  }
  const int64_t grid = model_->config().vision_tower.vision.grid();
  std::vector<int64_t> shape = {n, grid, grid, codes.size(2)};
  if (options.frames > 0) shape.insert(shape.begin() + 1, options.frames);
  return codes.view(shape);
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
