#include "mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "vilau/core/error.h"

namespace vilau::io {

MappedFile::MappedFile(const std::string& path) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer; the fstat
  // below refuses it (and devices, directories) either way.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    throw IoError(describe(path, "cannot open", "a readable file", std::strerror(errno)));
  }
  struct stat st{};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw IoError(describe(path, "cannot map", "a regular file",
                           "not a regular file (a FIFO, a device, a directory or a socket)"));
  }
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ > 0) {
    void* addr = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (addr == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      throw IoError(describe(path, "mmap failed", {}, std::strerror(err)));
    }
    data_ = static_cast<const char*>(addr);
  }
  ::close(fd);  // the mapping stays valid without the descriptor
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) {
    ::munmap(const_cast<char*>(data_), size_);
  }
}

void MappedFile::prefetch() const {
  if (data_ == nullptr) {
    return;
  }
  void* addr = const_cast<char*>(data_);
#ifdef MADV_POPULATE_READ
  if (::madvise(addr, size_, MADV_POPULATE_READ) == 0) {
    return;
  }
#endif
  ::madvise(addr, size_, MADV_WILLNEED);
}

}  // namespace vilau::io
