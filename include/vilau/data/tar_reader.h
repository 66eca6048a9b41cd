#pragma once
// Webdataset shards: plain tar files where the files of one sample share a key (the member
// name up to the first dot of its base name): key.jpg with key.json or key.txt. Read with
// libarchive straight from the shard, never unpacked to disk.
#include <cstdint>
#include <functional>
#include <string>

namespace vilau::data {

struct TarMember {
  std::string name;
  int64_t offset = 0;  // where its header starts, to read it again without a scan
  int64_t size = 0;
};

// Calls `visit(member, contents)` for every regular file of the shard in order; contents
// are read only for members `want(name)` accepts, the others are skipped without reading.
// FormatError naming the shard when it is not a readable tar.
void scan_tar(const std::string& shard, const std::function<bool(const std::string&)>& want,
              const std::function<void(const TarMember&, const std::string&)>& visit);

// The contents of the member whose header starts at `offset` (from scan_tar). Compressed
// shards cannot be read this way: FormatError.
std::string read_tar_member(const std::string& shard, int64_t offset);

// The webdataset key and extension of a member name: "a/b.x.jpg" -> {"a/b", "x.jpg"}.
std::pair<std::string, std::string> split_key(const std::string& name);

}  // namespace vilau::data
