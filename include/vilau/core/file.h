#pragma once
// Opening a file for reading, safely: every path vilau reads must be a regular file (after
// following symlinks), so that a FIFO cannot block the open forever, and a device such as
// /dev/zero or a directory is refused instead of read until memory runs out or printed
// as empty. Small files (configs, JSON, tokenizer models) also have a size bound.
#include <cstdint>
#include <string>

namespace vilau {

// IoError naming `path` and `what` it should hold: no such file, a directory, or not a
// regular file (a FIFO, a device, a socket).
void check_regular_file(const std::string& path, const std::string& what);

// Configs, JSON metadata and the like: far above any real one, far below exhausting memory.
inline constexpr int64_t kMaxConfigBytes = int64_t{64} << 20;

// The whole file, after check_regular_file; FormatError when it is larger than max_bytes.
std::string read_regular_file(const std::string& path, const std::string& what,
                              int64_t max_bytes = kMaxConfigBytes);

}  // namespace vilau
