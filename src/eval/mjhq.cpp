#include "vilau/eval/mjhq.h"

#include <torch/torch.h>

#include <algorithm>
#include <filesystem>

#include "vilau/core/error.h"
#include "vilau/io/json_file.h"

namespace fs = std::filesystem;

namespace vilau::eval {

std::vector<MjhqPrompt> read_mjhq_meta(const std::string& path) {
  const nlohmann::json meta = io::read_json_file(path, "MJHQ-30K meta_data.json");
  if (!meta.is_object() || meta.empty()) {
    throw FormatError(describe(path, "MJHQ-30K meta data", "an object of id -> {category, prompt}",
                               "something else"));
  }
  std::vector<MjhqPrompt> prompts;
  for (const auto& [id, entry] : meta.items()) {
    if (id.empty() || id.find_first_of("/\\") != std::string::npos || id == "." || id == "..") {
      throw FormatError(describe(path, "id '" + id + "'", "a plain file name"));
    }
    for (const char* key : {"category", "prompt"}) {
      if (!entry.is_object() || !entry.contains(key) || !entry.at(key).is_string()) {
        throw FormatError(
            describe(path, "entry '" + id + "'", std::string("a string '") + key + "'", "none"));
      }
    }
    prompts.push_back(
        {id, entry.at("category").get<std::string>(), entry.at("prompt").get<std::string>()});
  }
  std::sort(prompts.begin(), prompts.end(),
            [](const MjhqPrompt& a, const MjhqPrompt& b) { return a.id < b.id; });
  return prompts;
}

std::string mjhq_real_image(const std::string& real_dir, const MjhqPrompt& p) {
  const fs::path root(real_dir);
  for (const fs::path& candidate :
       {root / p.category / (p.id + ".jpg"), root / (p.id + ".jpg"), root / (p.id + ".png")}) {
    if (fs::is_regular_file(candidate)) {
      return candidate.string();
    }
  }
  throw IoError(describe(real_dir, "real picture of '" + p.id + "'",
                         p.category + "/" + p.id + ".jpg or " + p.id + ".jpg", "neither"));
}

std::map<std::string, FidStats> mjhq_stats(const at::Tensor& features,
                                           const std::vector<std::string>& categories) {
  if (features.dim() != 2 || features.size(0) != static_cast<int64_t>(categories.size())) {
    throw ShapeError(describe("mjhq_stats", "features", "[N, d] with one category per row",
                              c10::str(features.sizes(), " for ", categories.size())));
  }
  std::map<std::string, std::vector<int64_t>> rows;
  for (size_t i = 0; i < categories.size(); ++i) {
    if (categories[i] == "all") {
      throw FormatError(describe("MJHQ-30K meta data", "category 'all'",
                                 "a category name other than 'all' (the overall statistics)"));
    }
    rows[categories[i]].push_back(static_cast<int64_t>(i));
  }
  std::map<std::string, FidStats> stats;
  stats.emplace("all", compute_fid_stats(features));
  for (const auto& [category, index] : rows) {
    if (index.size() >= 2) {
      stats.emplace(category, compute_fid_stats(features.index_select(0, torch::tensor(index))));
    } else {
      stats.emplace(category, FidStats{{}, {}, static_cast<int64_t>(index.size())});
    }
  }
  return stats;
}

CategoryFid mjhq_fid(const std::map<std::string, FidStats>& real,
                     const std::map<std::string, FidStats>& fake) {
  CategoryFid out;
  out.overall = frechet_distance(real.at("all"), fake.at("all"));
  out.counts["all"] = fake.at("all").count;
  for (const auto& [category, f] : fake) {
    if (category == "all") continue;
    out.counts[category] = f.count;
    const auto r = real.find(category);
    const bool usable = r != real.end() && r->second.mu.defined() && f.mu.defined();
    out.per_category[category] =
        usable ? std::optional<double>(frechet_distance(r->second, f)) : std::nullopt;
  }
  return out;
}

}  // namespace vilau::eval
