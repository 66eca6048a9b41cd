#pragma once
// Video frames for understanding and text-to-video data: a video file read with OpenCV,
// or a folder of frame images.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace vilau::data {

// np.round(np.linspace(0, frame_count - 1, n)): the frames the official
// opencv_extract_frames keeps.
std::vector<int64_t> uniform_frame_indices(int64_t frame_count, int64_t n);

// `n` frames sampled uniformly, each RGB uint8 [H, W, 3]. `path` is a video file or a
// folder of images (taken in name order). When a file yields fewer frames than its header
// promised, the last decoded frame repeats. IoError for a missing path, FormatError for
// one with no decodable frame.
std::vector<at::Tensor> read_video_frames(const std::string& path, int64_t n);

}  // namespace vilau::data
