#include "vilau/core/progress.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>

#include "vilau/core/error.h"

namespace vilau {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<int64_t>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%lldh%02lldm", static_cast<long long>(s / 3600),
                  static_cast<long long>(s % 3600 / 60));
  } else if (s >= 60) {
    std::snprintf(buf, sizeof(buf), "%lldm%02llds", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  } else {
    std::snprintf(buf, sizeof(buf), "%llds", static_cast<long long>(s));
  }
  return buf;
}

ProgressBar::ProgressBar(std::string label, int64_t total, std::string unit, int64_t done,
                         bool enabled)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(total),
      start_(done),
      done_(done),
      enabled_(enabled),
      tty_(isatty(STDERR_FILENO) == 1),
      begin_(std::chrono::steady_clock::now()) {}

double ProgressBar::rate() const {
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - begin_).count();
  return elapsed > 0 ? static_cast<double>(done_ - start_) / elapsed : 0.0;
}

void ProgressBar::update(int64_t done, const std::string& status) {
  done_ = done;
  draw(false, status);
}

void ProgressBar::draw(bool force, const std::string& status) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (!tty_ && !force && done_ != total_ && now - last_line_ < std::chrono::seconds(2)) return;
  // finish() right after the last update repeats it only to add a status.
  if (!tty_ && done_ == printed_ && (!force || status.empty())) return;
  last_line_ = now;
  printed_ = done_;
  const double r = rate();
  const double eta = r > 0 ? static_cast<double>(total_ - done_) / r : NAN;
  const double fraction = total_ > 0 ? static_cast<double>(done_) / static_cast<double>(total_) : 0;
  constexpr int kWidth = 24;
  const int filled = static_cast<int>(fraction * kWidth);
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(kWidth, '.');
  std::fprintf(stderr, "%s%s [%s] %lld/%lld %s | %.2f %s/s | ETA %s%s%s%s", tty_ ? "\r\033[K" : "",
               label_.c_str(), bar.c_str(), static_cast<long long>(done_),
               static_cast<long long>(total_), unit_.c_str(), r, unit_.c_str(),
               format_duration(eta).c_str(), status.empty() ? "" : " | ", status.c_str(),
               tty_ ? "" : "\n");
  std::fflush(stderr);
}

void ProgressBar::finish(const std::string& status) {
  draw(true, status);
  if (enabled_ && tty_) std::fprintf(stderr, "\n");
}

MetricsWriter::MetricsWriter(const std::string& path) : path_(path), out_(path, std::ios::app) {
  if (!out_) {
    throw IoError(describe(path, "cannot open metrics file for appending"));
  }
}

void MetricsWriter::write(const nlohmann::json& record) {
  out_ << record.dump() << '\n';
  out_.flush();
}

}  // namespace vilau
