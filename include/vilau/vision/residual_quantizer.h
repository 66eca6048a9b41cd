#pragma once
// Residual quantizer of the vision tower (SPEC §2.3): D codebooks applied in turn to the
// residual of the previous depths, learnt by EMA (not by gradient) with dead-code restart.
// Parameter and buffer names follow the official RQBottleneck so that checkpoints load as
// they are: codebooks.{d}.weight [K+1, C] (last row: padding, never selected),
// codebooks.{d}.cluster_size_ema [K], codebooks.{d}.embed_ema [K, C].
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <optional>

#include "vilau/vision/config.h"

namespace vilau {

// One codebook with its EMA statistics (the official VQEmbedding).
class RqCodebookImpl : public torch::nn::Module {
 public:
  RqCodebookImpl(int64_t codebook_size, int64_t embed_dim);

  int64_t codebook_size() const { return codebook_size_; }
  // The K selectable codes, without the padding row.
  torch::Tensor codes() const { return weight.narrow(0, 0, codebook_size_); }

  torch::Tensor weight;            // [K+1, C], requires_grad = false
  torch::Tensor cluster_size_ema;  // [K]
  torch::Tensor embed_ema;         // [K, C]

 private:
  int64_t codebook_size_;
};
TORCH_MODULE(RqCodebook);

class ResidualQuantizerImpl : public torch::nn::Module {
 public:
  struct Output {
    torch::Tensor z_q;              // [..., C]: x + (Σ_d e_d - x).detach()
    torch::Tensor codes;            // [..., D] int64
    torch::Tensor commitment_loss;  // scalar fp32, unweighted (config.commitment_weight is
                                    // applied by the trainer, as in the official code)
    torch::Tensor residual_norms;   // [D] fp32: mean over positions of ‖x - Σ_{d'≤d} e_d'‖
  };
  struct Embeddings {
    torch::Tensor sum;        // [..., C]
    torch::Tensor per_depth;  // [..., D, C]
  };

  ResidualQuantizerImpl(const QuantizerConfig& config, int64_t embed_dim);

  // x: [..., C] (e.g. [B, H, W, C] or [N, C]). In training mode the codebooks are updated
  // depth by depth exactly as the official code does: depth d selects and embeds with the
  // codebook as it was before its own update, so a shared codebook is already updated for
  // depth d+1.
  Output forward(const torch::Tensor& x);

  // Σ_d codebook_d[codes[..., d]] (what the projector and the pixel decoder consume) and the
  // per-depth vectors; codes: [..., D] int64 in [0, K).
  Embeddings embed_codes(const torch::Tensor& codes) const;

  // The input each depth quantized: r_d = x - Σ_{d'<d} e_d'(codes), as [..., D, C].
  torch::Tensor residual_inputs(const torch::Tensor& x, const torch::Tensor& codes) const;

  // The EMA update of forward() in training mode, for callers that quantize without it (for
  // instance in eval mode, to update once after gradient accumulation). inputs: [..., D, C]
  // as residual_inputs() returns them; codes: [..., D]. Depths are updated in order.
  void update_codebooks(const torch::Tensor& inputs, const torch::Tensor& codes);

  // How data-parallel ranks keep identical codebooks: cluster counts and sums are summed
  // over the ranks and restarted codes come from the first rank. The trainer provides the
  // collectives (this module stays single-device); nullopt: a single process.
  struct RankSync {
    std::function<void(torch::Tensor&)> all_reduce_sum;
    std::function<void(torch::Tensor&)> broadcast_from_first;
    bool first = true;  // this is the rank the restart picks come from
  };
  void set_rank_sync(std::optional<RankSync> sync) { sync_ = std::move(sync); }
  // Draws the restart picks and noise; unset: the default generator of the device.
  void set_generator(std::optional<at::Generator> generator) { generator_ = std::move(generator); }
  // Rows of the input whose distances to all K codes are materialised at once.
  void set_distance_chunk_rows(int64_t rows);

  const QuantizerConfig& config() const { return config_; }
  int64_t embed_dim() const { return embed_dim_; }
  RqCodebook codebook(int64_t depth) const { return codebooks_[depth]; }

 private:
  // Index of the nearest code of `codebook` (squared L2, fp32) for each row of `rows` [N, C].
  torch::Tensor nearest_codes(const RqCodebookImpl& codebook, const torch::Tensor& rows) const;
  torch::Tensor check_codes(const torch::Tensor& codes, const char* where) const;
  void update_codebook(RqCodebookImpl& codebook, const torch::Tensor& rows,
                       const torch::Tensor& codes);
  void restart_dead_codes(RqCodebookImpl& codebook, const torch::Tensor& rows);

  QuantizerConfig config_;
  int64_t embed_dim_;
  int64_t chunk_rows_ = 2048;
  std::vector<RqCodebook> codebooks_;  // one per depth; all the same module when shared
  std::optional<RankSync> sync_;
  std::optional<at::Generator> generator_;
};
TORCH_MODULE(ResidualQuantizer);

}  // namespace vilau
