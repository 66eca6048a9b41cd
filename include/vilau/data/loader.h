#pragma once
// The training data loader: a seeded mixture order per epoch, sharded by rank, decoded by
// worker threads ahead of the trainer and delivered in order, so that the batches depend
// only on (config, seed, epoch, rank, world_size), never on the number of threads.
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "vilau/data/config.h"
#include "vilau/model/batch.h"

namespace vilau {
class Tokenizer;
}

namespace vilau::data {

// Where a rank stands: `index` counts this rank's samples of `epoch` already consumed,
// bad ones included. Saved with a checkpoint; resuming needs the same mixture, seed and
// world size.
struct DataPosition {
  int64_t epoch = 0;
  int64_t index = 0;

  nlohmann::json to_json() const;
  // FormatError naming `where` and the key for a missing or mistyped field.
  static DataPosition from_json(const nlohmann::json& j, const std::string& where = "position");
  bool operator==(const DataPosition& other) const {
    return epoch == other.epoch && index == other.index;
  }
};

// Skipped samples since the loader started, by reason (malformed_json, bad_record,
// empty_caption, missing_file, corrupt_image, corrupt_video, bad_conversation), plus the
// samples cut or dropped for max_length, which do not count as bad.
struct DataSummary {
  int64_t seen = 0;  // samples judged: good, bad and too long
  int64_t good = 0;
  int64_t bad = 0;
  int64_t trimmed = 0;
  int64_t too_long = 0;
  std::map<std::string, int64_t> bad_by_reason;
  std::map<std::string, std::string> example_by_reason;  // the first message of each

  nlohmann::json to_json() const;
};

struct DataBatch {
  MultimodalBatch batch;
  // With packing: [B, T] int64, 1, 2, ... for the samples of a row, 0 for padding.
  // Attention must not cross segments, and positions restart at each one. Undefined
  // without packing.
  at::Tensor segment_ids;
  std::vector<std::string> ids;       // each sample's source ("file.jsonl:3", "shard.tar:key")
  std::vector<std::string> captions;  // each sample's caption (t2i, t2v, tower), else empty
  DataPosition position;              // resume here to continue after this batch
};

class DataLoader {
 public:
  // Reads every manifest (IoError/FormatError when one cannot be read at all), then starts
  // `config.num_workers` threads. `tokenizer` must outlive the loader.
  DataLoader(const DataConfig& config, const Tokenizer& tokenizer, int64_t rank = 0,
             int64_t world_size = 1, DataPosition start = {});
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // The next batch of the current epoch (the last one may be smaller); nullopt once the
  // epoch is over, after which the next call starts the following epoch. FormatError when
  // the bad samples exceed max_bad_fraction.
  std::optional<DataBatch> next();

  DataPosition position() const;
  // This rank's share of the current epoch, bad samples included.
  int64_t samples_in_epoch() const;
  DataSummary summary() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace vilau::data
