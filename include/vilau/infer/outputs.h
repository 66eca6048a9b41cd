#pragma once
// What generation writes: images side by side, and frames as an MJPG video.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace vilau {

// Images RGB uint8 [N, H, W, 3] -> one [rows * H, columns * W, 3] grid, filled row by row;
// unused cells stay black.
at::Tensor image_grid(const at::Tensor& images, int64_t columns);

// Frames RGB uint8 [F, H, W, 3] -> an MJPG .avi at `fps`, written to a temporary name and
// renamed into place, so an interrupted run never leaves a partial file under `path`.
void write_video(const std::string& path, const at::Tensor& frames, double fps = 8.0);

}  // namespace vilau
