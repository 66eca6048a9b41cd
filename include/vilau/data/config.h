#pragma once
// The data pipeline's settings (docs/data.md): a mixture of datasets, pre-processing and
// the loader. YAML lists of maps are not supported by the config reader, so each dataset
// is one string of comma-separated key=value pairs:
//
//   datasets:
//     - path=llava_sft.json, format=llava, task=understanding, weight=2
//     - path=shards/, format=webdataset, task=t2i
//     - path=clips.jsonl, format=captions, task=t2v, frames=8
#include <cstdint>
#include <string>
#include <vector>

#include "vilau/core/config.h"

namespace vilau::data {

// What a dataset trains: the conversation template and which modality is the target.
enum class Task { understanding, t2i, t2v, tower };

enum class ResizeMode {
  resize,       // the official: bicubic to S x S, aspect ratio not kept
  pad,          // pad to a square with the mean colour (LLaVA's expand2square), then resize
  center_crop,  // the centre square, then resize
  square_crop,  // the official generation crop: top square of portraits, else the centre
};

struct DatasetSpec {
  std::string path;    // a manifest, a .tar shard or a folder of shards
  std::string format;  // captions | llava | webdataset
  Task task = Task::understanding;
  double weight = 1.0;  // samples per epoch = round(weight * size)
  int64_t frames = 8;   // frames sampled from each video
  ResizeMode resize = ResizeMode::resize;
  bool flip = false;  // random horizontal flips (tower data only)
  // Share of generation samples trained with the unconditional prompt instead of their
  // caption, so that classifier-free guidance has a trained unconditional branch.
  double uncond = 0.0;
};

struct DataConfig {
  std::vector<std::string> datasets;  // see above; parsed by mixture()
  std::string root;                   // relative dataset paths start here; empty: cwd
  int64_t image_size = 256;
  // Default for datasets that give no resize=...: "auto" is square_crop for generation
  // (t2i, t2v) and resize for the rest, as the official pipeline does.
  std::string resize_mode = "auto";
  int64_t tokens_per_image = 256;  // LLM positions one placeholder expands to
  int64_t max_length = 0;          // after visual expansion; 0: no limit
  int64_t seed = 0;
  int64_t batch_size = 1;
  int64_t num_workers = 2;  // 0 decodes on the calling thread
  int64_t prefetch = 2;     // batches decoded ahead
  // Several samples per row up to max_length, told apart by DataBatch::segment_ids.
  bool packing = false;
  double max_bad_fraction = 0.05;
  int64_t bad_check_after = 100;  // samples seen before the fraction is enforced mid-epoch

  template <class V>
  void visit(V& v) {
    v.field("datasets", datasets, required);
    v.field("root", root);
    v.field("image_size", image_size);
    v.field("resize_mode", resize_mode);
    v.field("tokens_per_image", tokens_per_image);
    v.field("max_length", max_length);
    v.field("seed", seed);
    v.field("batch_size", batch_size);
    v.field("num_workers", num_workers);
    v.field("prefetch", prefetch);
    v.field("packing", packing);
    v.field("max_bad_fraction", max_bad_fraction);
    v.field("bad_check_after", bad_check_after);
  }
  // ConfigError naming `path`.key for any invalid value, a dataset string included.
  void validate(const std::string& path) const;
  // The parsed datasets; relative paths are joined to `root`.
  std::vector<DatasetSpec> mixture(const std::string& path = "data") const;
};

const char* task_name(Task task);
const char* resize_mode_name(ResizeMode mode);

}  // namespace vilau::data
