#include "vilau/infer/runtime.h"

#include <torch/cuda.h>
#include <torch/torch.h>

#include <filesystem>

#include "vilau/core/error.h"
#include "vilau/dist/process_group.h"
#include "vilau/io/tensor_store.h"
#include "vilau/model/official_checkpoint.h"

namespace vilau {

at::Device parse_device(const std::string& name) {
  at::Device device(at::kCPU);
  try {
    device = at::Device(name);
  } catch (const c10::Error&) {
    throw ConfigError(
        describe("--device", "unknown device", "cpu, cuda or cuda:N", "'" + name + "'"));
  }
  if (device.is_cuda() && !torch::cuda::is_available()) {
    throw DeviceError(describe("--device " + name, "CUDA is not available",
                               "a CUDA build of LibTorch and a visible GPU (see `vilau info`)",
                               "neither"));
  }
  if (!device.is_cpu() && !device.is_cuda()) {
    throw ConfigError(describe("--device", "unsupported device", "cpu, cuda or cuda:N", name));
  }
  // One process per GPU under torchrun or srun: a plain "cuda" means this process's GPU.
  if (device.is_cuda() && !device.has_index()) {
    const int64_t local = read_dist_env().local_rank;
    if (local >= torch::cuda::device_count()) {
      throw DeviceError(describe("--device cuda", "LOCAL_RANK " + std::to_string(local),
                                 "below the number of visible GPUs",
                                 std::to_string(torch::cuda::device_count())));
    }
    device = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(local));
  }
  return device;
}

at::ScalarType parse_dtype(const std::string& name, at::Device device) {
  if (name == "auto") return device.is_cuda() ? at::kBFloat16 : at::kFloat;
  if (name == "bf16") return at::kBFloat16;
  if (name == "fp16") return at::kHalf;
  if (name == "fp32") return at::kFloat;
  throw ConfigError(describe("--dtype", "unknown dtype", "auto, bf16, fp16 or fp32", name));
}

const char* dtype_name(at::ScalarType dtype) {
  switch (dtype) {
    case at::kBFloat16:
      return "bf16";
    case at::kHalf:
      return "fp16";
    case at::kFloat:
      return "fp32";
    default:
      return c10::toString(dtype);
  }
}

InferenceModel load_inference_model(const std::string& dir, at::Device device,
                                    at::ScalarType dtype) {
  if (!std::filesystem::is_directory(dir)) {
    throw IoError(
        describe(dir, "cannot open model", "a VILA-U checkpoint folder", "no such folder"));
  }
  // The tokenizer first: it is cheap and its errors are the more common ones.
  Tokenizer tokenizer = Tokenizer::load((std::filesystem::path(dir) / "llm").string());
  return {load_vila_u(dir, dtype, device), std::move(tokenizer)};
}

VisionTower load_vision_tower(const std::string& dir, at::Device device) {
  const OfficialCheckpoint ckpt = OfficialCheckpoint::open(dir);
  VisionTower tower(ckpt.config().vision_tower);
  const io::TensorStore& store = ckpt.store(Component::vision_tower);
  tower->load([&store](const std::string& name) {
    return store.contains(name) ? store.tensor(name) : at::Tensor();
  });
  tower->eval();
  tower->to(device);
  return tower;
}

VilaU random_vila_u(const ModelConfig& config, at::Device device, at::ScalarType dtype,
                    uint64_t seed) {
  torch::manual_seed(seed);
  const caffe2::TypeMeta previous = c10::get_default_dtype();
  c10::set_default_dtype(c10::scalarTypeToTypeMeta(dtype));
  VilaU model{nullptr};
  try {
    model = VilaU(config);
  } catch (...) {
    c10::set_default_dtype(previous);
    throw;
  }
  c10::set_default_dtype(previous);
  model->to(device);
  model->eval();
  return model;
}

}  // namespace vilau
