// `vilau info`: what this build of vilau runs on, as text or JSON.
#include <ATen/Parallel.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <thread>

#include "build_info.h"
#include "commands.h"
#include "vilau/version.h"

#ifdef VILAU_WITH_CUDA
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#endif

namespace vilau::cli {

namespace {

// NCCL ships as a separate shared library next to CUDA LibTorch; asking it for its
// version proves that a process group could actually be created.
nlohmann::json nccl_info() {
#ifdef VILAU_WITH_CUDA
  for (const char* name : {"libnccl.so.2", "libnccl.so"}) {
    if (void* lib = dlopen(name, RTLD_LAZY | RTLD_LOCAL)) {
      using GetVersion = int (*)(int*);
      auto get_version = reinterpret_cast<GetVersion>(dlsym(lib, "ncclGetVersion"));
      int version = 0;
      if (get_version != nullptr && get_version(&version) == 0) {
        return {{"available", true}, {"version", version}};
      }
    }
  }
  return {{"available", false}, {"reason", "libnccl.so.2 not loadable"}};
#else
  return {{"available", false}, {"reason", "LibTorch was built without CUDA"}};
#endif
}

nlohmann::json devices_info() {
  nlohmann::json devices = nlohmann::json::array();
  devices.push_back({{"type", "cpu"}, {"cores", std::thread::hardware_concurrency()}});
#ifdef VILAU_WITH_CUDA
  if (torch::cuda::is_available()) {
    for (int i = 0; i < static_cast<int>(torch::cuda::device_count()); ++i) {
      cudaDeviceProp prop{};
      if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) {
        devices.push_back(
            {{"type", "cuda"}, {"index", i}, {"error", "cudaGetDeviceProperties failed"}});
        continue;
      }
      devices.push_back(
          {{"type", "cuda"},
           {"index", i},
           {"name", prop.name},
           {"memory_gib", static_cast<double>(prop.totalGlobalMem) / (1 << 30)},
           {"compute_capability", std::to_string(prop.major) + "." + std::to_string(prop.minor)}});
    }
  }
#endif
  return devices;
}

nlohmann::json collect() {
  const bool cuda_built =
#ifdef VILAU_WITH_CUDA
      true;
#else
      false;
#endif
  return {
      {"vilau", VILAU_VERSION},
      {"libtorch", {{"version", TORCH_VERSION}, {"cmake_dir", VILAU_TORCH_DIR}}},
      {"cuda",
       {{"built", cuda_built},
        {"available", torch::cuda::is_available()},
        {"device_count", torch::cuda::device_count()}}},
      {"cudnn", {{"available", torch::cuda::cudnn_is_available()}}},
      {"nccl", nccl_info()},
      {"devices", devices_info()},
      {"threads",
       {{"intra_op", at::get_num_threads()}, {"inter_op", at::get_num_interop_threads()}}},
      {"build",
       {{"type", VILAU_BUILD_TYPE},
        {"compiler", VILAU_COMPILER},
        {"cxx_flags", VILAU_CXX_FLAGS},
        {"cxx11_abi", _GLIBCXX_USE_CXX11_ABI == 1},
        {"mkl", at::hasMKL()},
        {"mkldnn", at::hasMKLDNN()},
        {"openmp", at::hasOpenMP()}}},
  };
}

void print_text(const nlohmann::json& info) {
  std::printf("vilau     %s\n", info["vilau"].get<std::string>().c_str());
  std::printf("libtorch  %s (%s)\n", info["libtorch"]["version"].get<std::string>().c_str(),
              info["libtorch"]["cmake_dir"].get<std::string>().c_str());
  std::printf("cuda      built=%s available=%s devices=%d\n",
              info["cuda"]["built"].get<bool>() ? "yes" : "no",
              info["cuda"]["available"].get<bool>() ? "yes" : "no",
              info["cuda"]["device_count"].get<int>());
  std::printf("cudnn     %s\n", info["cudnn"]["available"].get<bool>() ? "yes" : "no");
  std::printf("nccl      %s\n", info["nccl"].dump().c_str());
  for (const auto& device : info["devices"]) {
    std::printf("device    %s\n", device.dump().c_str());
  }
  std::printf("threads   intra-op=%d inter-op=%d\n", info["threads"]["intra_op"].get<int>(),
              info["threads"]["inter_op"].get<int>());
  std::printf("build     %s\n", info["build"].dump().c_str());
}

}  // namespace

void add_info_command(CLI::App& app) {
  CLI::App* info =
      app.add_subcommand("info", "Report LibTorch, CUDA, cuDNN, NCCL, devices and build flags");
  auto json = std::make_shared<bool>(false);
  info->add_flag("--json", *json, "Print one JSON object");
  info->callback([json] {
    const nlohmann::json report = collect();
    if (*json) {
      std::printf("%s\n", report.dump(2).c_str());
    } else {
      print_text(report);
    }
  });
}

}  // namespace vilau::cli
