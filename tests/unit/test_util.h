#pragma once
// Helpers shared by the unit tests.
#include <ATen/core/Tensor.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "vilau/io/safetensors.h"
#include "vilau/model/load_module.h"

namespace vilau::testing {

// Runs `fn`, expects an exception of type E and returns its message; any other outcome
// fails the test.
template <class E, class Fn>
std::string error_of(Fn fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
    return {};
  }
  ADD_FAILURE() << "no exception thrown";
  return {};
}

// Bitwise equality, so that NaN payloads and bf16 bits count too.
inline void expect_bitwise_equal(const at::Tensor& a, const at::Tensor& b) {
  ASSERT_EQ(a.scalar_type(), b.scalar_type());
  ASSERT_EQ(a.sizes(), b.sizes());
  const at::Tensor ca = a.contiguous(), cb = b.contiguous();
  EXPECT_EQ(std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.nbytes()), 0);
}

// max|a - b| / max|b|: one scale for the whole tensor, so near-zero entries do not dominate.
inline double relative_error(const at::Tensor& actual, const at::Tensor& expected) {
  EXPECT_EQ(actual.sizes(), expected.sizes());
  return (actual - expected).abs().max().item<double>() / expected.abs().max().item<double>();
}

// A fixture file's tensors by name, undefined when absent, as load_module expects.
inline TensorLookup lookup_in(const io::SafetensorsFile& file) {
  return [&file](const std::string& name) {
    return file.find(name) != nullptr ? file.tensor(name) : at::Tensor();
  };
}

// Names (without `prefix`) and shapes a fixture file stores under `prefix`.
inline std::map<std::string, std::vector<int64_t>> stored_shapes(const io::SafetensorsFile& file,
                                                                 const std::string& prefix) {
  std::map<std::string, std::vector<int64_t>> out;
  for (const auto& info : file.tensors()) {
    if (info.name.rfind(prefix, 0) == 0) {
      out[info.name.substr(prefix.size())] = info.shape;
    }
  }
  return out;
}

// Names and shapes of a module's parameters.
inline std::map<std::string, std::vector<int64_t>> parameter_shapes(torch::nn::Module& module) {
  std::map<std::string, std::vector<int64_t>> out;
  for (const auto& p : module.named_parameters()) {
    out[p.key()] = p.value().sizes().vec();
  }
  return out;
}

// A fresh temporary folder per test, named after the test and removed afterwards.
class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        std::filesystem::temp_directory_path() /
        ("vilau_" +
         std::string(::testing::UnitTest::GetInstance()->current_test_info()->test_suite_name()) +
         "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  std::filesystem::path dir_;
};

}  // namespace vilau::testing
