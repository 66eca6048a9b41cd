#pragma once
// The Inception-v3 that FID is defined with: pytorch-fid's fid_inception_v3() (the TF
// 2015-12-05 graph ported to PyTorch) up to the 2048-d pool3 features, fed as clean-fid's
// "clean" protocol feeds it (docs/evaluation.md, FID).
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>

namespace vilau::eval {

constexpr int64_t kInceptionSize = 299;       // input side
constexpr int64_t kInceptionFeatures = 2048;  // pool3 width

// clean-fid's resize: RGB uint8 [H, W, 3] -> float32 [3, 299, 299] in [0, 255]. Each channel
// is resized by Pillow's bicubic in mode "F" (no rounding to uint8), then clipped to
// [0, 255].
at::Tensor clean_fid_resize(const at::Tensor& rgb);

class FidInception {
 public:
  // Tensors hold LibTorch's default initialisation until loaded or filled.
  explicit FidInception(at::Device device = at::kCPU);
  // A converted pt_inception-2015-12-05 file (scripts/convert_inception_weights.py). ShapeError
  // naming the file, the tensor and the expected shape when one is missing or misshaped;
  // tensors the network does not use (fc.*) are ignored.
  static FidInception load(const std::string& path, at::Device device = at::kCPU);

  // [B, 3, 299, 299] pixels in [0, 255] (any float type, any device) -> float32 [B, 2048]
  // on the model's device. The network sees (x - 128) / 128, as in clean-fid.
  at::Tensor forward(const at::Tensor& pixels) const;

  // Every parameter and buffer under its pytorch-fid state-dict name; writing to these
  // tensors changes the network (tests fill them with seeded values).
  std::map<std::string, at::Tensor> named_tensors() const;
  at::Device device() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace vilau::eval
