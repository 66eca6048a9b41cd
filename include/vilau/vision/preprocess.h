#pragma once
// Pixels in and out of the vision tower (SPEC §2.2, §2.4).
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace vilau {

// Pillow's Image.resize(BICUBIC) on RGB uint8 [H, W, 3] or RGBA [H, W, 4], to the pixel:
// the resize the official pipeline applies before CLIPImageProcessor. RGBA is resampled
// premultiplied by its alpha, as Pillow does.
at::Tensor pil_bicubic_resize(const at::Tensor& rgb, int64_t width, int64_t height);

// The same filter on a CPU float32 [H, W, C] image, without rounding: what Pillow does to a
// mode "F" image (double accumulation, float32 between and after the passes), applied to
// every channel. clean-fid resizes this way before FID.
at::Tensor pil_bicubic_resize_float(const at::Tensor& image, int64_t width, int64_t height);

// RGB uint8 [H, W, 3] (or RGBA [H, W, 4], see io::read_image_with_alpha) -> float
// [3, S, S] in [-1, 1]: pil_bicubic_resize to S x S, alpha dropped, then
// (x / 255 - 0.5) / 0.5. The aspect ratio is not kept, as in the official "resize" mode.
at::Tensor preprocess_image(const at::Tensor& rgb, int64_t size);

// Generation training data: a square crop, the top square of a portrait image, else the
// centre square (the official mm_utils rule).
at::Tensor square_crop(const at::Tensor& rgb);

// Decoder output [B, 3, S, S] (about [-1, 1]) -> RGB uint8 [B, S, S, 3]:
// (x + 1) * 127.5, clamped to [0, 255], truncated as the official numpy astype does.
at::Tensor postprocess_image(const at::Tensor& pixels);

}  // namespace vilau
