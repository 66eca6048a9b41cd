#pragma once
// Pixels for the tower: decoding, the resize modes and the flip augmentation.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "vilau/data/config.h"

namespace vilau::data {

// Encoded image bytes (a tar member) -> RGB uint8 [H, W, 3]; FormatError naming `where`.
at::Tensor decode_image(const std::string& bytes, const std::string& where);

// LLaVA's expand2square: the image centred on a square of the processor's mean colour.
at::Tensor pad_to_square(const at::Tensor& rgb);
// The centre square (torchvision CenterCrop rounding).
at::Tensor center_square(const at::Tensor& rgb);

// RGB uint8 [H, W, 3] -> float [3, S, S] in [-1, 1] in the given mode, mirrored
// left-right when `flip`.
at::Tensor transform_image(const at::Tensor& rgb, ResizeMode mode, int64_t size, bool flip);

}  // namespace vilau::data
