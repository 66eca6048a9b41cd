#include "vilau/data/loader.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <cmath>
#include <condition_variable>
#include <map>
#include <mutex>
#include <numeric>
#include <random>
#include <thread>

#include "vilau/core/error.h"
#include "vilau/data/collate.h"
#include "vilau/data/manifest.h"
#include "vilau/data/tar_reader.h"
#include "vilau/data/transforms.h"
#include "vilau/data/video.h"
#include "vilau/io/image.h"
#include "vilau/tokenizer/tokenizer.h"

namespace vilau::data {

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t mix(uint64_t seed, uint64_t epoch, uint64_t stream) {
  return splitmix64(splitmix64(splitmix64(seed) ^ epoch) ^ stream);
}

// Fisher-Yates with an unbiased bounded draw of our own: std::shuffle and the standard
// distributions differ between library versions, and the order must not.
template <class T>
void shuffle(std::vector<T>& items, std::mt19937_64& rng) {
  for (size_t i = items.size(); i > 1; --i) {
    const uint64_t bound = i, limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t draw = rng();
    while (draw >= limit) {
      draw = rng();
    }
    std::swap(items[i - 1], items[draw % bound]);
  }
}

struct Dataset {
  DatasetSpec spec;
  std::vector<SampleEntry> samples;
};

struct Ref {
  int64_t dataset = 0;
  int64_t sample = 0;
  int64_t global = 0;  // position in the whole epoch, the same on every rank
};

// What became of one sample: a sample, or the reason it was skipped.
struct Outcome {
  std::optional<ProcessedSample> sample;
  LengthFit fit = LengthFit::fits;
  std::string reason;
  std::string message;
};

}  // namespace

nlohmann::json DataPosition::to_json() const { return {{"epoch", epoch}, {"index", index}}; }

DataPosition DataPosition::from_json(const nlohmann::json& j, const std::string& where) {
  DataPosition p;
  for (const auto& [key, value] :
       {std::pair<const char*, int64_t*>{"epoch", &p.epoch}, {"index", &p.index}}) {
    if (!j.is_object() || !j.contains(key) || !j[key].is_number_integer() ||
        j[key].get<int64_t>() < 0) {
      throw FormatError(describe(where, std::string("key '") + key + "'", "a non-negative integer",
                                 j.is_object() && j.contains(key) ? j[key].dump() : "nothing"));
    }
    *value = j[key].get<int64_t>();
  }
  return p;
}

nlohmann::json DataSummary::to_json() const {
  return {{"seen", seen},
          {"good", good},
          {"bad", bad},
          {"trimmed", trimmed},
          {"too_long", too_long},
          {"bad_by_reason", bad_by_reason},
          {"example_by_reason", example_by_reason}};
}

struct DataLoader::Impl {
  DataConfig config;
  const Tokenizer& tokenizer;
  int64_t rank, world_size;
  std::vector<Dataset> datasets;

  // Shared with the workers, under `mutex`.
  mutable std::mutex mutex;
  std::condition_variable work_ready, result_ready;
  int64_t epoch = 0;
  uint64_t generation = 0;  // bumped per epoch, so late results of the old one are dropped
  std::vector<Ref> order;   // this rank's samples of the epoch
  int64_t cursor = 0;       // next index the trainer takes
  int64_t claimed = 0;      // next index a worker takes
  std::map<int64_t, Outcome> results;
  bool stopping = false;
  std::vector<std::thread> workers;

  // The trainer's thread only.
  DataSummary summary;
  bool epoch_over = false;
  std::optional<ProcessedSample> pending;  // packing: taken, waits for the next batch

  Impl(const DataConfig& c, const Tokenizer& t, int64_t r, int64_t w)
      : config(c), tokenizer(t), rank(r), world_size(w) {}

  int64_t capacity() const {
    return std::max(config.prefetch * config.batch_size, config.num_workers);
  }

  void plan_epoch(int64_t e, int64_t start) {
    std::vector<Ref> all;
    for (size_t d = 0; d < datasets.size(); ++d) {
      const auto n = static_cast<int64_t>(datasets[d].samples.size());
      if (n == 0) {
        continue;
      }
      // Weights below 1 take a different random subset each epoch, above 1 repeat it.
      std::vector<int64_t> perm(n);
      std::iota(perm.begin(), perm.end(), 0);
      std::mt19937_64 rng(mix(config.seed, e, d + 1));
      shuffle(perm, rng);
      const auto count = static_cast<int64_t>(std::llround(datasets[d].spec.weight * n));
      for (int64_t k = 0; k < count; ++k) {
        all.push_back({static_cast<int64_t>(d), perm[k % n], 0});
      }
    }
    std::mt19937_64 rng(mix(config.seed, e, 0));
    shuffle(all, rng);
    std::vector<Ref> mine;
    for (size_t i = rank; i < all.size(); i += world_size) {
      mine.push_back(all[i]);
      mine.back().global = static_cast<int64_t>(i);
    }
    std::lock_guard<std::mutex> lock(mutex);
    epoch = e;
    ++generation;
    order = std::move(mine);
    cursor = claimed = std::min<int64_t>(start, order.size());
    results.clear();
    work_ready.notify_all();
  }

  std::vector<at::Tensor> load_media(const Dataset& d, const SampleEntry& e, bool flip) const {
    std::vector<at::Tensor> rgb;
    if (!e.video.empty()) {
      rgb = read_video_frames(e.video, d.spec.frames);
    } else if (e.shard_offset >= 0) {
      rgb.push_back(decode_image(read_tar_member(e.shard, e.shard_offset), e.where));
    } else {
      for (const std::string& path : e.images) {
        rgb.push_back(io::read_image(path));
      }
    }
    std::vector<at::Tensor> pixels;
    for (const at::Tensor& image : rgb) {
      pixels.push_back(transform_image(image, d.spec.resize, config.image_size, flip));
    }
    return pixels;
  }

  TrainingSample tokenize(const Dataset& d, const SampleEntry& e, bool unconditional) const {
    const bool video = !e.video.empty();
    if (unconditional) {
      return make_unconditional_generation_sample(tokenizer,
                                                  d.spec.task == Task::t2v ? d.spec.frames : 0);
    }
    switch (d.spec.task) {
      case Task::understanding: {
        const auto images = static_cast<int64_t>(e.images.size()) + (e.shard_offset >= 0 ? 1 : 0);
        return make_training_sample(
            tokenizer,
            conversation_turns(e.conversations, images, video ? d.spec.frames : 0, e.where));
      }
      case Task::t2v:
        return make_generation_sample(tokenizer, e.caption, d.spec.frames);
      case Task::t2i:
      case Task::tower:
        break;
    }
    return make_generation_sample(tokenizer, e.caption);
  }

  Outcome process(const Ref& ref, int64_t e) const {
    const Dataset& d = datasets[ref.dataset];
    const SampleEntry& entry = d.samples[ref.sample];
    Outcome out;
    const char* stage = "bad_conversation";
    try {
      ProcessedSample s;
      s.id = entry.where;
      s.caption = entry.caption;
      // Drawn from the sample's place in the epoch, so a resumed run drops the same ones.
      const double draw =
          static_cast<double>(splitmix64(mix(config.seed, e, ref.global) ^ 0x756e636fULL) >> 11) *
          0x1.0p-53;
      TrainingSample tokens = tokenize(d, entry, draw < d.spec.uncond);
      // A sample with every label masked teaches nothing; past max_bad_fraction of them the
      // run stops instead of training on silence (a tokenizer whose pieces differ inside a
      // conversation and on their own does this to every multi-turn sample).
      if (!tokens.rounds_mismatch.empty()) {
        throw FormatError(describe(entry.where, "conversation labels",
                                   "rounds whose lengths add up to the tokenised conversation",
                                   tokens.rounds_mismatch));
      }
      s.input_ids = std::move(tokens.input_ids);
      s.labels = std::move(tokens.labels);
      const auto placeholders =
          std::count(s.input_ids.begin(), s.input_ids.end(), kImageTokenIndex);
      const auto media = entry.video.empty() ? static_cast<int64_t>(entry.images.size()) +
                                                   (entry.shard_offset >= 0 ? 1 : 0)
                                             : d.spec.frames;
      if (placeholders != media) {
        throw FormatError(describe(entry.where, "<image> placeholders",
                                   std::to_string(media) + " (one per image or frame)",
                                   std::to_string(placeholders)));
      }
      if (placeholders > 0 && config.max_length > 0 &&
          expanded_length(s.input_ids, config.tokens_per_image) > config.max_length) {
        out.fit = LengthFit::too_long;  // known before paying for the decode
        return out;
      }
      stage = entry.video.empty() ? "corrupt_image" : "corrupt_video";
      // A stream of its own ("flip"), so that flips do not correlate with the order.
      const bool flip =
          d.spec.flip && (splitmix64(mix(config.seed, e, ref.global) ^ 0x666c6970ULL) & 1) != 0;
      s.images = load_media(d, entry, flip);
      out.fit = fit_length(s, config.max_length, config.tokens_per_image);
      out.sample = std::move(s);
    } catch (const IoError& err) {
      out.reason = "missing_file";
      out.message = err.what();
    } catch (const std::exception& err) {
      out.reason = stage;
      out.message = err.what();
    }
    return out;
  }

  void worker_loop() {
    std::unique_lock<std::mutex> lock(mutex);
    while (true) {
      work_ready.wait(lock, [&] {
        return stopping ||
               (claimed < static_cast<int64_t>(order.size()) && claimed < cursor + capacity());
      });
      if (stopping) {
        return;
      }
      const int64_t index = claimed++;
      const Ref ref = order[index];
      const uint64_t gen = generation;
      const int64_t e = epoch;
      lock.unlock();
      Outcome outcome = process(ref, e);
      lock.lock();
      if (gen == generation) {
        results.emplace(index, std::move(outcome));
        result_ready.notify_all();
      }
    }
  }

  // The outcome at `cursor`, decoded by a worker or, without workers, right here.
  Outcome take() {
    if (workers.empty()) {
      return process(order[cursor++], epoch);
    }
    std::unique_lock<std::mutex> lock(mutex);
    result_ready.wait(lock, [&] { return results.count(cursor) > 0; });
    Outcome out = std::move(results.at(cursor));
    results.erase(cursor++);
    work_ready.notify_all();
    return out;
  }

  // The next good sample of the epoch, counting the others; nullopt at the epoch's end.
  std::optional<ProcessedSample> next_good() {
    if (pending) {
      std::optional<ProcessedSample> out = std::move(pending);
      pending.reset();
      return out;
    }
    while (cursor < static_cast<int64_t>(order.size())) {
      const Ref ref = order[cursor];
      Outcome outcome = take();
      ++summary.seen;
      const std::string& where = datasets[ref.dataset].samples[ref.sample].where;
      if (!outcome.reason.empty()) {
        count_bad(where, outcome.reason, outcome.message);
      } else if (outcome.fit == LengthFit::too_long) {
        ++summary.too_long;
        spdlog::debug("data: dropping {}: longer than max_length {}", where, config.max_length);
      } else {
        summary.trimmed += outcome.fit == LengthFit::trimmed ? 1 : 0;
        ++summary.good;
        check_bad_fraction(cursor >= static_cast<int64_t>(order.size()));
        return std::move(outcome.sample);
      }
      check_bad_fraction(cursor >= static_cast<int64_t>(order.size()));
    }
    return std::nullopt;
  }

  // Fills up to batch_size rows of at most max_length (expanded) positions with whole
  // samples in order; the first sample that does not fit waits for the next batch.
  void pack_rows(std::vector<std::vector<ProcessedSample>>& rows) {
    int64_t used = 0;
    while (std::optional<ProcessedSample> sample = next_good()) {
      const int64_t length = expanded_length(sample->input_ids, config.tokens_per_image);
      if (!rows.empty() && used + length <= config.max_length) {
        used += length;
        rows.back().push_back(std::move(*sample));
        continue;
      }
      if (static_cast<int64_t>(rows.size()) == config.batch_size) {
        pending = std::move(sample);
        return;
      }
      rows.emplace_back();
      rows.back().push_back(std::move(*sample));
      used = length;
    }
  }

  void count_bad(const std::string& where, const std::string& reason, const std::string& message) {
    const std::string full = where + ": " + message;
    ++summary.bad;
    ++summary.bad_by_reason[reason];
    summary.example_by_reason.emplace(reason, full);
    spdlog::warn("data: skipping a bad sample ({}): {}", reason, full);
  }

  void check_bad_fraction(bool epoch_end) const {
    if (summary.seen == 0 || (!epoch_end && summary.seen < config.bad_check_after) ||
        static_cast<double>(summary.bad) <= config.max_bad_fraction * summary.seen) {
      return;
    }
    std::string reasons;
    for (const auto& [reason, count] : summary.bad_by_reason) {
      reasons += (reasons.empty() ? "" : ", ") + reason + " " + std::to_string(count) + " (e.g. " +
                 summary.example_by_reason.at(reason) + ")";
    }
    throw FormatError(
        describe("data",
                 std::to_string(summary.bad) + " of " + std::to_string(summary.seen) +
                     " samples are bad: " + reasons,
                 "at most max_bad_fraction " + nlohmann::json(config.max_bad_fraction).dump(),
                 nlohmann::json(static_cast<double>(summary.bad) / summary.seen).dump()));
  }
};

DataLoader::DataLoader(const DataConfig& config, const Tokenizer& tokenizer, int64_t rank,
                       int64_t world_size, DataPosition start)
    : impl_(std::make_unique<Impl>(config, tokenizer, rank, world_size)) {
  config.validate("data");
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    throw ConfigError(describe("data loader", "rank",
                               "0 <= rank < world_size " + std::to_string(world_size),
                               std::to_string(rank)));
  }
  for (const DatasetSpec& spec : config.mixture()) {
    Manifest manifest = read_dataset(spec);
    spdlog::info("data: {} ({}, {}): {} samples, {} bad entries", spec.path, spec.format,
                 task_name(spec.task), manifest.samples.size(), manifest.bad.size());
    for (const BadEntry& bad : manifest.bad) {
      ++impl_->summary.seen;
      impl_->count_bad(bad.where, bad.reason, bad.message);
    }
    impl_->datasets.push_back({spec, std::move(manifest.samples)});
  }
  impl_->plan_epoch(start.epoch, start.index);
  for (int64_t i = 0; i < config.num_workers; ++i) {
    impl_->workers.emplace_back([this] { impl_->worker_loop(); });
  }
}

DataLoader::~DataLoader() {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->work_ready.notify_all();
  for (std::thread& t : impl_->workers) {
    t.join();
  }
}

std::optional<DataBatch> DataLoader::next() {
  Impl& m = *impl_;
  if (m.epoch_over) {
    m.epoch_over = false;
    m.plan_epoch(m.epoch + 1, 0);
  }
  std::vector<std::vector<ProcessedSample>> rows;
  if (m.config.packing) {
    m.pack_rows(rows);
  } else {
    while (static_cast<int64_t>(rows.size()) < m.config.batch_size) {
      std::optional<ProcessedSample> sample = m.next_good();
      if (!sample) {
        break;
      }
      rows.push_back({std::move(*sample)});
    }
  }
  if (rows.empty()) {
    m.epoch_over = true;
    return std::nullopt;
  }
  DataBatch out;
  if (m.config.packing) {
    PackedBatch packed = collate_packed(rows, m.tokenizer.pad_id());
    out.batch = std::move(packed.batch);
    out.segment_ids = std::move(packed.segment_ids);
  } else {
    std::vector<ProcessedSample> samples;
    for (auto& row : rows) {
      samples.push_back(std::move(row.front()));
    }
    out.batch = collate(samples, m.tokenizer.pad_id());
    rows = {std::move(samples)};
  }
  for (const auto& row : rows) {
    for (const ProcessedSample& s : row) {
      out.ids.push_back(s.id);
      out.captions.push_back(s.caption);
    }
  }
  out.position = position();
  return out;
}

DataPosition DataLoader::position() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  if (impl_->epoch_over) {
    return {impl_->epoch + 1, 0};
  }
  // A sample held back for the next packed row has been taken but not delivered.
  return {impl_->epoch, impl_->cursor - (impl_->pending ? 1 : 0)};
}

int64_t DataLoader::samples_in_epoch() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return static_cast<int64_t>(impl_->order.size());
}

DataSummary DataLoader::summary() const { return impl_->summary; }

}  // namespace vilau::data
