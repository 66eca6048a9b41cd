#pragma once
// Progress of long work: a one-line bar on stderr with rate and ETA (when stderr is not a
// terminal, a plain line at most every few seconds and at the end, so that logs stay
// readable), and metrics as JSON lines.
#include <chrono>
#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

namespace vilau {

class ProgressBar {
 public:
  // `unit` names what is counted ("step", "image"); `done` is where a resumed job starts.
  ProgressBar(std::string label, int64_t total, std::string unit, int64_t done = 0,
              bool enabled = true);
  // Sets the count and redraws with `status` (e.g. "loss 2.31 lr 1e-4").
  void update(int64_t done, const std::string& status = {});
  void finish(const std::string& status = {});
  double rate() const;  // units per second since construction

 private:
  void draw(bool force, const std::string& status);

  std::string label_, unit_;
  int64_t total_, start_, done_, printed_ = -1;
  bool enabled_, tty_;
  std::chrono::steady_clock::time_point begin_, last_line_;
};

// Appends one JSON object per line and flushes it, so a crash loses at most one line.
class MetricsWriter {
 public:
  explicit MetricsWriter(const std::string& path);  // IoError when it cannot be opened
  void write(const nlohmann::json& record);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
};

// "1h02m", "3m05s", "12s".
std::string format_duration(double seconds);

}  // namespace vilau
