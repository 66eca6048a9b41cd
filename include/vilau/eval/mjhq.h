#pragma once
// MJHQ-30K (docs/evaluation.md): the prompts of its meta_data.json, the matching real
// pictures, and FID overall and per category from per-picture Inception features.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "vilau/eval/fid.h"

namespace vilau::eval {

struct MjhqPrompt {
  std::string id;  // the picture's file stem
  std::string category;
  std::string prompt;
};

// meta_data.json: {"<id>": {"category": ..., "prompt": ...}, ...}, returned sorted by id so
// that sharding does not depend on the JSON library's key order. FormatError naming the file
// and the id for a missing key or an id that is not a plain file name.
std::vector<MjhqPrompt> read_mjhq_meta(const std::string& path);

// The real picture of `p`: real_dir/<category>/<id>.jpg as the published zip unpacks, or
// real_dir/<id>.jpg (also .png) flattened. IoError naming both places when neither exists.
std::string mjhq_real_image(const std::string& real_dir, const MjhqPrompt& p);

struct CategoryFid {
  double overall = 0;
  // nullopt for a category with fewer than two pictures on either side (no covariance).
  std::map<std::string, std::optional<double>> per_category;
  std::map<std::string, int64_t> counts;
};

// Stats of the real pictures, overall ("all") and per category.
std::map<std::string, FidStats> mjhq_stats(const at::Tensor& features,
                                           const std::vector<std::string>& categories);

// FID of fake against real stats as mjhq_stats lays them out.
CategoryFid mjhq_fid(const std::map<std::string, FidStats>& real,
                     const std::map<std::string, FidStats>& fake);

}  // namespace vilau::eval
