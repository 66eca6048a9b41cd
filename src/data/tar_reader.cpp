#include "vilau/data/tar_reader.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <unistd.h>

#include <memory>
#include <vector>

#include "vilau/core/error.h"
#include "vilau/core/file.h"

namespace vilau::data {

namespace {

using ArchivePtr = std::unique_ptr<archive, int (*)(archive*)>;

// Reads a shard from a byte offset with pread, so that several threads can each open
// their own view of one shard, and a member can be read without scanning the ones before.
struct FileSource {
  int fd = -1;
  int64_t position = 0;
  std::vector<char> buffer = std::vector<char>(1 << 16);
  ~FileSource() {
    if (fd >= 0) {
      ::close(fd);
    }
  }
};

la_ssize_t read_callback(archive*, void* data, const void** out) {
  auto* src = static_cast<FileSource*>(data);
  const ssize_t n = ::pread(src->fd, src->buffer.data(), src->buffer.size(), src->position);
  if (n < 0) {
    return -1;
  }
  src->position += n;
  *out = src->buffer.data();
  return n;
}

la_int64_t skip_callback(archive*, void* data, la_int64_t request) {
  static_cast<FileSource*>(data)->position += request;
  return request;
}

std::string archive_message(archive* a) {
  const char* message = archive_error_string(a);
  return message != nullptr ? message : "unknown libarchive error";
}

ArchivePtr open_at(const std::string& shard, int64_t offset, FileSource& source) {
  // A FIFO or a device would block or never end: refused before it is opened.
  check_regular_file(shard, "a tar shard");
  source.fd = ::open(shard.c_str(), O_RDONLY | O_CLOEXEC);
  if (source.fd < 0) {
    throw IoError(describe(shard, "cannot open tar shard", "a readable file", "no such file"));
  }
  source.position = offset;
  ArchivePtr a(archive_read_new(), archive_read_free);
  archive_read_support_format_tar(a.get());
  archive_read_support_format_gnutar(a.get());
  archive_read_set_read_callback(a.get(), read_callback);
  archive_read_set_skip_callback(a.get(), skip_callback);
  archive_read_set_callback_data(a.get(), &source);
  if (archive_read_open1(a.get()) != ARCHIVE_OK) {
    throw FormatError(describe(shard, "cannot read tar shard", "an uncompressed tar file",
                               archive_message(a.get())));
  }
  return a;
}

std::string read_data(archive* a, const std::string& shard, const std::string& name) {
  std::string contents;
  char chunk[1 << 16];
  la_ssize_t n = 0;
  while ((n = archive_read_data(a, chunk, sizeof(chunk))) > 0) {
    contents.append(chunk, static_cast<size_t>(n));
  }
  if (n < 0) {
    throw FormatError(
        describe(shard + ":" + name, "cannot read tar member", "intact data", archive_message(a)));
  }
  return contents;
}

}  // namespace

std::pair<std::string, std::string> split_key(const std::string& name) {
  const size_t slash = name.rfind('/');
  const size_t dot = name.find('.', slash == std::string::npos ? 0 : slash + 1);
  if (dot == std::string::npos) {
    return {name, ""};
  }
  return {name.substr(0, dot), name.substr(dot + 1)};
}

void scan_tar(const std::string& shard, const std::function<bool(const std::string&)>& want,
              const std::function<void(const TarMember&, const std::string&)>& visit) {
  FileSource source;
  ArchivePtr a = open_at(shard, 0, source);
  archive_entry* entry = nullptr;
  int status = ARCHIVE_OK;
  while ((status = archive_read_next_header(a.get(), &entry)) == ARCHIVE_OK ||
         status == ARCHIVE_WARN) {
    if (archive_entry_filetype(entry) != AE_IFREG) {
      continue;
    }
    TarMember member;
    member.name = archive_entry_pathname(entry) != nullptr ? archive_entry_pathname(entry) : "";
    member.offset = archive_read_header_position(a.get());
    member.size = archive_entry_size(entry);
    visit(member, want(member.name) ? read_data(a.get(), shard, member.name) : std::string());
  }
  if (status != ARCHIVE_EOF) {
    throw FormatError(describe(shard, "cannot read tar shard", "an uncompressed tar file",
                               archive_message(a.get())));
  }
}

std::string read_tar_member(const std::string& shard, int64_t offset) {
  FileSource source;
  ArchivePtr a = open_at(shard, offset, source);
  archive_entry* entry = nullptr;
  const int status = archive_read_next_header(a.get(), &entry);
  if (status != ARCHIVE_OK && status != ARCHIVE_WARN) {
    throw FormatError(describe(shard + " at byte " + std::to_string(offset),
                               "cannot read tar member", "a tar header", archive_message(a.get())));
  }
  const char* name = archive_entry_pathname(entry);
  return read_data(a.get(), shard, name != nullptr ? name : "?");
}

}  // namespace vilau::data
