#pragma once
// Pixels in and out of the vision tower (SPEC §2.2, §2.4).
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace vilau {

// RGB uint8 [H, W, 3] -> float [3, S, S] in [-1, 1]: an S x S bicubic resize with
// antialiasing (Pillow's filter, which the official CLIPImageProcessor uses), rounded to
// uint8 like Pillow, then (x / 255 - 0.5) / 0.5. The aspect ratio is not kept, as in the
// official "resize" mode.
at::Tensor preprocess_image(const at::Tensor& rgb, int64_t size);

// Generation training data: a square crop, the top square of a portrait image, else the
// centre square (the official mm_utils rule).
at::Tensor square_crop(const at::Tensor& rgb);

// Decoder output [B, 3, S, S] (about [-1, 1]) -> RGB uint8 [B, S, S, 3]:
// (x + 1) * 127.5, clamped to [0, 255], truncated as the official numpy astype does.
at::Tensor postprocess_image(const at::Tensor& pixels);

}  // namespace vilau
