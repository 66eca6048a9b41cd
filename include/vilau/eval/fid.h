#pragma once
// Fréchet Inception Distance (docs/evaluation.md, FID): pool3 features of image folders,
// their Gaussian statistics, stored as safetensors, and the distance between two of them.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "vilau/eval/inception.h"

namespace vilau::eval {

struct FidStats {
  at::Tensor mu;     // [d] float64
  at::Tensor sigma;  // [d, d] float64
  int64_t count = 0;
};

// features [N, d], any float type and device, in float64 on the CPU: the mean and the
// unbiased covariance (numpy.cov(rowvar=False)). ShapeError unless N >= 2.
FidStats compute_fid_stats(const at::Tensor& features);

// safetensors with F64 `mu` [d] and `sigma` [d, d], the count in the metadata.
void save_fid_stats(const std::string& path, const FidStats& stats);
// FormatError / ShapeError naming the file and the key for a missing tensor, a dtype other
// than F64, a wrong rank or sizes that disagree.
FidStats load_fid_stats(const std::string& path);

// ||mu_a - mu_b||^2 + tr(sigma_a) + tr(sigma_b) - 2 tr(sqrtm(sigma_a sigma_b)), in float64.
// ShapeError when the dimensions differ.
double frechet_distance(const FidStats& a, const FidStats& b);

// *.png, *.jpg, *.jpeg directly in `dir` (any case), sorted by name. IoError for a folder
// that does not exist or holds none.
std::vector<std::string> list_fid_images(const std::string& dir);

class FidFeatureExtractor {
 public:
  explicit FidFeatureExtractor(FidInception model) : model_(std::move(model)) {}

  // pool3 features of each image, float32 [N, 2048] on the CPU, in the order given. Images
  // are read (io::read_image) and resized with clean_fid_resize `batch` at a time;
  // `progress` draws a bar on stderr.
  at::Tensor features(const std::vector<std::string>& image_paths, int64_t batch = 50,
                      bool progress = true) const;
  // compute_fid_stats of the features of list_fid_images(dir); IoError for fewer than 2.
  FidStats folder_stats(const std::string& dir, int64_t batch = 50, bool progress = true) const;

 private:
  FidInception model_;
};

}  // namespace vilau::eval
