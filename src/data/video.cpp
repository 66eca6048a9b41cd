#include "vilau/data/video.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>

#include "vilau/core/error.h"
#include "vilau/core/file.h"
#include "vilau/io/image.h"

namespace vilau::data {

namespace fs = std::filesystem;

namespace {

bool is_image_name(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".bmp" || ext == ".webp";
}

std::vector<at::Tensor> read_frame_folder(const std::string& dir, int64_t n) {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.is_regular_file() && is_image_name(entry.path())) {
      files.push_back(entry.path());
    }
  }
  if (files.empty()) {
    throw FormatError(
        describe(dir, "cannot read frames", "a folder of .jpg or .png frames", "no image files"));
  }
  std::sort(files.begin(), files.end());
  std::vector<at::Tensor> frames;
  for (const int64_t i : uniform_frame_indices(static_cast<int64_t>(files.size()), n)) {
    frames.push_back(io::read_image(files[i].string()));
  }
  return frames;
}

at::Tensor to_rgb(const cv::Mat& bgr) {
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return torch::from_blob(rgb.data, {rgb.rows, rgb.cols, 3}, torch::kUInt8).clone();
}

}  // namespace

std::vector<int64_t> uniform_frame_indices(int64_t frame_count, int64_t n) {
  std::vector<int64_t> indices;
  for (int64_t i = 0; i < n; ++i) {
    const double t = n == 1 ? 0.0 : static_cast<double>(i) / static_cast<double>(n - 1);
    indices.push_back(
        static_cast<int64_t>(std::nearbyint(t * static_cast<double>(frame_count - 1))));
  }
  return indices;
}

std::vector<at::Tensor> read_video_frames(const std::string& path, int64_t n) {
  if (fs::is_directory(path)) {
    return read_frame_folder(path, n);
  }
  check_regular_file(path, "a video file or a folder of frames");
  cv::VideoCapture capture;
  try {
    capture.open(path);
  } catch (const cv::Exception& e) {
    throw FormatError(describe(path, "cannot open video", "a video OpenCV can decode", e.what()));
  }
  const auto frame_count = static_cast<int64_t>(capture.get(cv::CAP_PROP_FRAME_COUNT));
  if (!capture.isOpened() || frame_count <= 0) {
    throw FormatError(describe(path, "cannot open video", "a video OpenCV can decode",
                               "a corrupt or unsupported file"));
  }
  const std::vector<int64_t> wanted = uniform_frame_indices(frame_count, n);
  std::vector<at::Tensor> frames;
  cv::Mat bgr;
  // Decoding in order and keeping the wanted frames, as the official code does: seeking
  // is not frame-accurate in every container.
  for (int64_t index = 0; static_cast<int64_t>(frames.size()) < n; ++index) {
    bool ok = false;
    try {
      ok = capture.read(bgr) && !bgr.empty();
    } catch (const cv::Exception&) {
      ok = false;
    }
    if (!ok) {
      break;
    }
    const auto copies = std::count(wanted.begin(), wanted.end(), index);
    for (int64_t c = 0; c < copies; ++c) {
      frames.push_back(to_rgb(bgr));
    }
  }
  if (frames.empty()) {
    throw FormatError(describe(path, "cannot decode video", "at least one decodable frame",
                               "none of " + std::to_string(frame_count)));
  }
  while (static_cast<int64_t>(frames.size()) < n) {
    frames.push_back(frames.back());
  }
  return frames;
}

}  // namespace vilau::data
