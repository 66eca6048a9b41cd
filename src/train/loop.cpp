#include "loop.h"

#include <chrono>
#include <cstdio>

#include "vilau/train/optimizer.h"

namespace vilau::train_detail {

TrainSummary run_loop(Run& run, Stage& stage, TrainSummary summary, const TrainOptions& options) {
  const TrainConfig& tc = run.train;
  ProgressBar bar("train " + tc.stage, tc.max_steps, "step", summary.first_step,
                  options.progress && run.is_main());
  const auto started = std::chrono::steady_clock::now();
  int64_t step = summary.first_step, samples_done = 0, tokens_done = 0;
  while (step < tc.max_steps) {
    const double factor =
        cosine_lr_factor(step, tc.max_steps, tc.optimizer.warmup_ratio, tc.optimizer.min_lr_ratio);
    const bool log = (step + 1) % tc.log_every == 0 || step + 1 == tc.max_steps;
    const Stage::Outcome outcome = stage.step(step, factor, log);
    ++step;
    if (options.after_step) options.after_step(step, stage.optimizer());
    summary.losses.push_back(outcome.loss);
    if (outcome.update.skipped) run.count_skipped(summary, step, outcome.update.grad_norm);
    samples_done += outcome.samples;
    tokens_done += outcome.tokens;
    if (log) {
      const double elapsed =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      const double lr = tc.optimizer.lr * factor;
      nlohmann::json record = outcome.metrics;
      record["step"] = step;
      record["loss"] = outcome.loss;
      record["lr"] = lr;
      record["grad_norm"] = outcome.update.grad_norm;
      record["skipped"] = outcome.update.skipped;
      record["samples_per_s"] = static_cast<double>(samples_done) / elapsed;
      if (tokens_done > 0) record["tokens_per_s"] = static_cast<double>(tokens_done) / elapsed;
      record["elapsed_s"] = elapsed;
      run.log(record);
      char status[160];
      if (tokens_done > 0) {
        std::snprintf(status, sizeof status, "loss %.4f lr %.2e %.0f tok/s %.2f samples/s",
                      outcome.loss, lr, static_cast<double>(tokens_done) / elapsed,
                      static_cast<double>(samples_done) / elapsed);
      } else {
        std::snprintf(status, sizeof status, "loss %.4f lr %.2e %.2f samples/s", outcome.loss, lr,
                      static_cast<double>(samples_done) / elapsed);
      }
      bar.update(step, status);
    }
    if (step == options.stop_after_step && step != tc.max_steps) {
      summary.last_step = step;
      return summary;
    }
    if (run.checkpoint_due(step)) {
      io::TrainingState state;
      state.step = step;
      state.model = stage.weights();
      state.scheduler = {{"type", "cosine"},
                         {"step", step},
                         {"total_steps", tc.max_steps},
                         {"warmup_ratio", tc.optimizer.warmup_ratio}};
      run.save(std::move(state), outcome.position,
               [&stage](const std::string& folder) { stage.write_shards(folder); });
    }
  }
  bar.finish();
  summary.last_step = step;
  if (tc.export_at_end) summary.export_dir = stage.export_model();
  run.group.barrier();
  return summary;
}

}  // namespace vilau::train_detail
