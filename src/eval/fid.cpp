#include "vilau/eval/fid.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>

#include "vilau/core/error.h"
#include "vilau/core/progress.h"
#include "vilau/io/image.h"
#include "vilau/io/safetensors.h"

namespace vilau::eval {

namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string found_tensor(const io::TensorInfo& info) {
  return std::string(io::dtype_name(info.dtype)) + " " + io::shape_text(info.shape);
}

// The symmetric square root of a PSD matrix through its eigendecomposition; eigenvalues that
// rounding pushed below zero count as zero.
at::Tensor psd_sqrt(const at::Tensor& m) {
  const auto [values, vectors] = at::linalg_eigh(m);
  return (vectors * values.clamp_min(0).sqrt().unsqueeze(0)).matmul(vectors.transpose(0, 1));
}

}  // namespace

FidStats compute_fid_stats(const at::Tensor& features) {
  if (features.dim() != 2 || features.size(0) < 2 || !features.is_floating_point()) {
    throw ShapeError(describe(
        "compute_fid_stats", "features", "float [N >= 2, d]",
        std::string(c10::toString(features.scalar_type())) + " " + c10::str(features.sizes())));
  }
  const at::Tensor x = features.to(torch::kCPU, torch::kDouble);
  const at::Tensor mu = x.mean(0);
  const at::Tensor centred = x - mu;
  const at::Tensor sigma = centred.transpose(0, 1).matmul(centred) / (x.size(0) - 1);
  return {mu, sigma, x.size(0)};
}

void save_fid_stats(const std::string& path, const FidStats& stats) {
  if (!stats.mu.defined() || !stats.sigma.defined() || stats.mu.dim() != 1 ||
      stats.sigma.sizes().vec() != std::vector<int64_t>{stats.mu.size(0), stats.mu.size(0)}) {
    throw ShapeError(describe(path, "FID statistics to save", "mu [d] and sigma [d, d]",
                              stats.mu.defined() && stats.sigma.defined()
                                  ? c10::str(stats.mu.sizes(), " and ", stats.sigma.sizes())
                                  : "undefined tensors"));
  }
  io::save_safetensors(path,
                       {{"mu", stats.mu.to(torch::kCPU, torch::kDouble)},
                        {"sigma", stats.sigma.to(torch::kCPU, torch::kDouble)}},
                       {{"format", "vilau-fid-stats"}, {"count", std::to_string(stats.count)}});
}

FidStats load_fid_stats(const std::string& path) {
  const io::SafetensorsFile file = io::SafetensorsFile::open(path);
  auto get = [&](const std::string& key, size_t rank) {
    const io::TensorInfo* info = file.find(key);
    if (info == nullptr) {
      throw FormatError(describe(path + ": '" + key + "'", "FID statistics",
                                 "an F64 tensor (files hold mu [d] and sigma [d, d])",
                                 "no such tensor"));
    }
    if (info->dtype != io::DType::F64 || info->shape.size() != rank) {
      throw ShapeError(describe(path + ": '" + key + "'", "FID statistics",
                                rank == 1 ? "F64 [d]" : "F64 [d, d]", found_tensor(*info)));
    }
    return file.tensor(key).clone();  // owns its memory once the mapping is gone
  };
  FidStats stats{get("mu", 1), get("sigma", 2), 0};
  const int64_t d = stats.mu.size(0);
  if (stats.sigma.size(0) != d || stats.sigma.size(1) != d) {
    throw ShapeError(
        describe(path + ": 'sigma'", "FID statistics",
                 "F64 " + io::shape_text({d, d}) + " to match mu [" + std::to_string(d) + "]",
                 found_tensor(*file.find("sigma"))));
  }
  const auto count = file.metadata().find("count");
  if (count != file.metadata().end()) {
    try {
      stats.count = std::stoll(count->second);
    } catch (const std::exception&) {
      throw FormatError(describe(path + ": metadata 'count'", "FID statistics", "an integer",
                                 "'" + count->second + "'"));
    }
  }
  return stats;
}

// tr(sqrtm(A B)) for covariances A, B: with S = sqrt(A), A B = S (S B S) S^-1, so A B is
// similar to the symmetric PSD matrix S B S and has its eigenvalues l_i >= 0; the principal
// square root scipy.linalg.sqrtm returns then has eigenvalues sqrt(l_i), so its trace is
// sum sqrt(l_i). By continuity this also holds when A is singular, where scipy needs
// pytorch-fid's eps fallback and this path does not: eigh of a symmetric matrix is stable.
double frechet_distance(const FidStats& a, const FidStats& b) {
  if (a.mu.size(0) != b.mu.size(0)) {
    throw ShapeError(describe("frechet_distance", "feature dimensions",
                              "equal, d = " + std::to_string(a.mu.size(0)),
                              "d = " + std::to_string(b.mu.size(0))));
  }
  const at::Tensor mu_a = a.mu.to(torch::kDouble), mu_b = b.mu.to(torch::kDouble);
  const at::Tensor sa = a.sigma.to(torch::kDouble), sb = b.sigma.to(torch::kDouble);
  const at::Tensor root_a = psd_sqrt(sa);
  at::Tensor inner = root_a.matmul(sb).matmul(root_a);
  inner = (inner + inner.transpose(0, 1)) / 2;  // symmetric up to rounding
  const double tr_covmean = at::linalg_eigvalsh(inner).clamp_min(0).sqrt().sum().item<double>();
  const double mean_term = (mu_a - mu_b).square().sum().item<double>();
  return mean_term + sa.trace().item<double>() + sb.trace().item<double>() - 2.0 * tr_covmean;
}

std::vector<std::string> list_fid_images(const std::string& dir) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(dir)) {
    throw IoError(describe(dir, "image folder", "a folder of .png/.jpg/.jpeg", "no such folder"));
  }
  std::vector<std::string> out;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string ext = lower(entry.path().extension().string());
    if (entry.is_regular_file() && (ext == ".png" || ext == ".jpg" || ext == ".jpeg")) {
      out.push_back(entry.path().string());
    }
  }
  if (out.empty()) {
    throw IoError(describe(dir, "image folder", "at least one .png/.jpg/.jpeg image", "none"));
  }
  std::sort(out.begin(), out.end());
  return out;
}

at::Tensor FidFeatureExtractor::features(const std::vector<std::string>& image_paths, int64_t batch,
                                         bool progress) const {
  if (batch < 1) {
    throw ConfigError(describe("FID", "batch size", "at least 1", std::to_string(batch)));
  }
  const auto n = static_cast<int64_t>(image_paths.size());
  at::Tensor out = torch::empty({n, kInceptionFeatures}, torch::kFloat);
  ProgressBar bar("inception", n, "image", 0, progress);
  std::vector<at::Tensor> pixels;
  for (int64_t start = 0; start < n; start += batch) {
    const int64_t size = std::min(batch, n - start);
    pixels.assign(size, at::Tensor());
    // Decoding and resizing dominate on the CPU; each image is independent. at::parallel_for
    // rethrows the first exception (a corrupt image's FormatError) on this thread.
    at::parallel_for(0, size, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        pixels[i] = clean_fid_resize(io::read_image(image_paths[start + i]));
      }
    });
    out.slice(0, start, start + size).copy_(model_.forward(torch::stack(pixels)));
    bar.update(start + size);
  }
  bar.finish();
  return out;
}

FidStats FidFeatureExtractor::folder_stats(const std::string& dir, int64_t batch,
                                           bool progress) const {
  const std::vector<std::string> paths = list_fid_images(dir);
  if (paths.size() < 2) {
    throw IoError(describe(dir, "image folder", "at least 2 images for a covariance", "1"));
  }
  return compute_fid_stats(features(paths, batch, progress));
}

}  // namespace vilau::eval
