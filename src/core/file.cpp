#include "vilau/core/file.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include "vilau/core/error.h"

namespace vilau {

namespace fs = std::filesystem;

void check_regular_file(const std::string& path, const std::string& what) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);  // follows symlinks
  if (ec || !fs::exists(status)) {
    throw IoError(describe(path, "cannot open", what, "no such file"));
  }
  if (fs::is_directory(status)) {
    throw IoError(describe(path, "cannot open", what, "a directory"));
  }
  if (!fs::is_regular_file(status)) {
    throw IoError(
        describe(path, "cannot open", what, "not a regular file (a FIFO, a device or a socket)"));
  }
}

std::string read_regular_file(const std::string& path, const std::string& what, int64_t max_bytes) {
  check_regular_file(path, what);
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (!ec && static_cast<int64_t>(size) > max_bytes) {
    throw FormatError(describe(path, "file too large",
                               what + " of at most " + std::to_string(max_bytes) + " bytes",
                               std::to_string(size) + " bytes"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw IoError(describe(path, "cannot open", what, "a file that cannot be read"));
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace vilau
