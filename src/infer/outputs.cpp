#include "vilau/infer/outputs.h"

#include <torch/torch.h>

#include <filesystem>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>

#include "vilau/core/error.h"

namespace vilau {

at::Tensor image_grid(const at::Tensor& images, int64_t columns) {
  if (images.dim() != 4 || images.size(3) != 3 || images.scalar_type() != at::kByte ||
      columns <= 0) {
    throw ShapeError(describe("image grid", "images", "uint8 [N, H, W, 3] and columns > 0",
                              c10::str(images.sizes(), " ", images.scalar_type())));
  }
  const int64_t n = images.size(0), h = images.size(1), w = images.size(2);
  columns = std::min(columns, std::max<int64_t>(n, 1));
  const int64_t rows = (n + columns - 1) / columns;
  at::Tensor grid = at::zeros({rows * h, columns * w, 3}, images.options());
  for (int64_t i = 0; i < n; ++i) {
    grid.narrow(0, (i / columns) * h, h).narrow(1, (i % columns) * w, w).copy_(images[i]);
  }
  return grid;
}

void write_video(const std::string& path, const at::Tensor& frames, double fps) {
  if (frames.dim() != 4 || frames.size(3) != 3 || frames.scalar_type() != at::kByte) {
    throw ShapeError(describe(path, "video frames", "uint8 [F, H, W, 3]",
                              c10::str(frames.sizes(), " ", frames.scalar_type())));
  }
  // OpenCV picks the container from the extension, so the temporary keeps it.
  const std::filesystem::path target(path);
  const std::filesystem::path tmp =
      target.parent_path() / (target.stem().string() + ".partial" + target.extension().string());
  const cv::Size size(static_cast<int>(frames.size(2)), static_cast<int>(frames.size(1)));
  {
    cv::VideoWriter writer(tmp.string(), cv::VideoWriter::fourcc('M', 'J', 'P', 'G'), fps, size);
    if (!writer.isOpened()) {
      throw IoError(describe(path, "cannot write video", "an MJPG .avi OpenCV can encode",
                             "the writer did not open"));
    }
    const at::Tensor cpu = frames.cpu().contiguous();
    for (int64_t f = 0; f < cpu.size(0); ++f) {
      const cv::Mat rgb(size, CV_8UC3, cpu[f].data_ptr<uint8_t>());
      cv::Mat bgr;
      cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
      writer.write(bgr);
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, target, ec);
  if (ec) {
    throw IoError(describe(path, "cannot rename the finished video into place", "", ec.message()));
  }
}

}  // namespace vilau
