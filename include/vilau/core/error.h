#pragma once
// One exception hierarchy for the whole framework. Every message states where the
// problem is (file, key, tensor), what was expected and what was found, so the CLI can
// print it as is and a user can act on it without a debugger.
#include <stdexcept>
#include <string>
#include <string_view>

namespace vilau {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// YAML configs: unknown, missing or mistyped keys, bad overrides, invalid values.
class ConfigError : public Error {
 public:
  using Error::Error;
};

// A file that cannot be opened, read, written or renamed.
class IoError : public Error {
 public:
  using Error::Error;
};

// A file whose contents break its format: safetensors, JSON, images, tokenizer models.
class FormatError : public Error {
 public:
  using Error::Error;
};

// A tensor whose shape or dtype disagrees with what the model expects.
class ShapeError : public Error {
 public:
  using Error::Error;
};

// A device or backend that is asked for but not available (CUDA-only options on CPU).
class DeviceError : public Error {
 public:
  using Error::Error;
};

// A collective that failed or timed out, usually because another rank exited.
class DistError : public Error {
 public:
  using Error::Error;
};

// "<where>: <what>: expected <expected>, found <found>"; empty parts are left out.
std::string describe(std::string_view where, std::string_view what, std::string_view expected = {},
                     std::string_view found = {});

}  // namespace vilau
