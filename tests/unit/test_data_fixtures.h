#pragma once
// Small data sets the data tests write themselves: PNG/JPEG images and MJPG videos with
// OpenCV, tar shards with libarchive's writer, manifests as text.
#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>

#include <fstream>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/videoio.hpp>
#include <string>
#include <utility>
#include <vector>

#include "vilau/tokenizer/tokenizer.h"

namespace vilau::testing {

inline const Tokenizer& data_tokenizer() {
  static const Tokenizer t = Tokenizer::load(VILAU_TEST_DATA_DIR "/tokenizer");
  return t;
}

// A BGR image of one colour (blue, green, red) with a brighter top-left pixel.
inline cv::Mat solid(int height, int width, int b, int g, int r) {
  cv::Mat m(height, width, CV_8UC3, cv::Scalar(b, g, r));
  m.at<cv::Vec3b>(0, 0) = cv::Vec3b(255, 255, 255);
  return m;
}

inline void write_image(const std::string& path, const cv::Mat& bgr) {
  ASSERT_TRUE(cv::imwrite(path, bgr)) << path;
}

inline std::string encode(const std::string& ext, const cv::Mat& bgr) {
  std::vector<uchar> bytes;
  cv::imencode(ext, bgr, bytes);
  return std::string(bytes.begin(), bytes.end());
}

// `frames` frames of a flat grey whose level is 10 * (index + 1), so that a test can read
// back which frames were sampled despite MJPG's loss.
inline void write_video(const std::string& path, int frames, int height = 32, int width = 32) {
  cv::VideoWriter writer(path, cv::VideoWriter::fourcc('M', 'J', 'P', 'G'), 8.0,
                         cv::Size(width, height));
  ASSERT_TRUE(writer.isOpened()) << path;
  for (int i = 0; i < frames; ++i) {
    const int level = 10 * (i + 1);
    writer.write(cv::Mat(height, width, CV_8UC3, cv::Scalar(level, level, level)));
  }
}

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// A ustar/pax tar with the given members, in order.
inline void write_tar(const std::string& path,
                      const std::vector<std::pair<std::string, std::string>>& members) {
  archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  ASSERT_EQ(archive_write_open_filename(a, path.c_str()), ARCHIVE_OK);
  for (const auto& [name, contents] : members) {
    archive_entry* entry = archive_entry_new();
    archive_entry_set_pathname(entry, name.c_str());
    archive_entry_set_size(entry, static_cast<la_int64_t>(contents.size()));
    archive_entry_set_filetype(entry, AE_IFREG);
    archive_entry_set_perm(entry, 0644);
    archive_write_header(a, entry);
    archive_write_data(a, contents.data(), contents.size());
    archive_entry_free(entry);
  }
  archive_write_close(a);
  archive_write_free(a);
}

}  // namespace vilau::testing
