#pragma once
// Internal: a read-only memory mapping of a whole file.
#include <cstdint>
#include <string>

namespace vilau::io {

class MappedFile {
 public:
  // IoError naming the path when the file is missing or cannot be mapped.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const char* data() const { return data_; }
  uint64_t size() const { return size_; }
  // Asks the kernel to fault in all pages up front: one call instead of a page fault per
  // 4 KiB when every tensor is about to be read.
  void prefetch() const;

 private:
  const char* data_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace vilau::io
