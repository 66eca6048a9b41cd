#pragma once
// Image files through OpenCV, as RGB uint8 tensors [H, W, 3].
#include <ATen/core/Tensor.h>

#include <string>

namespace vilau::io {

// IoError for a missing file, FormatError naming the file for one OpenCV cannot decode.
at::Tensor read_image(const std::string& path);
// Encodes by extension (.png, .jpg, ...) and writes atomically.
void write_image(const std::string& path, const at::Tensor& rgb);

}  // namespace vilau::io
