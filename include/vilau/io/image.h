#pragma once
// Image files through OpenCV, as RGB uint8 tensors [H, W, 3].
#include <ATen/core/Tensor.h>

#include <string>

namespace vilau::io {

// IoError for a missing file, FormatError naming the file for one OpenCV cannot decode.
at::Tensor read_image(const std::string& path);
// The same, but an 8-bit image with an alpha channel (RGBA, or grey with alpha) comes back
// as RGBA [H, W, 4]: the official pipeline resizes such pictures with their alpha
// (preprocess_image), and only then drops it.
at::Tensor read_image_with_alpha(const std::string& path);
// Encodes by extension (.png, .jpg, ...) and writes atomically.
void write_image(const std::string& path, const at::Tensor& rgb);

}  // namespace vilau::io
