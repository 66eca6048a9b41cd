#include "vilau/core/error.h"

namespace vilau {

std::string describe(std::string_view where, std::string_view what, std::string_view expected,
                     std::string_view found) {
  std::string out;
  if (!where.empty()) {
    out.append(where).append(": ");
  }
  out.append(what);
  if (!expected.empty()) {
    out.append(": expected ").append(expected);
  }
  if (!found.empty()) {
    out.append(expected.empty() ? ": found " : ", found ").append(found);
  }
  return out;
}

}  // namespace vilau
