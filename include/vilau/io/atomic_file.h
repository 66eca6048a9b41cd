#pragma once
// Writes that either complete or leave the destination untouched: data goes to a
// temporary sibling, is flushed to disk, then renamed over the destination.
#include <cstddef>
#include <string>
#include <string_view>

namespace vilau::io {

class AtomicFile {
 public:
  explicit AtomicFile(std::string path);  // IoError if the temporary cannot be created
  ~AtomicFile();                          // removes the temporary unless committed
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t size);
  void write(std::string_view text) { write(text.data(), text.size()); }
  // fsync, rename into place, fsync the directory.
  void commit();

 private:
  std::string path_;
  std::string tmp_path_;
  int fd_ = -1;
};

// Writes a whole small file atomically.
void write_file_atomic(const std::string& path, std::string_view contents);

// fsync a directory so that renames inside it survive a crash.
void sync_directory(const std::string& dir);

}  // namespace vilau::io
