#include "vilau/dist/process_group.h"

#include <torch/torch.h>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <cstdlib>
#include <string>

#include "vilau/core/error.h"

namespace vilau {

namespace {

const char* first_env(std::initializer_list<const char*> names, const char** which) {
  for (const char* name : names) {
    if (const char* value = std::getenv(name)) {
      *which = name;
      return value;
    }
  }
  return nullptr;
}

int64_t env_integer(std::initializer_list<const char*> names, int64_t fallback) {
  const char* which = nullptr;
  const char* value = first_env(names, &which);
  if (value == nullptr) return fallback;
  try {
    size_t used = 0;
    const int64_t v = std::stoll(value, &used);
    if (used == std::string(value).size() && v >= 0) return v;
  } catch (const std::exception&) {
  }
  throw ConfigError(describe(std::string("environment variable ") + which, "value",
                             "a non-negative integer", std::string("'") + value + "'"));
}

// c10d reports a timeout as c10::Error and Gloo a dead peer as its own exception; ours
// names the rank and the call.
template <class Fn>
void guarded(const DistEnv& env, const std::string& what, Fn&& fn) {
  const auto fail = [&](const char* detail) {
    return DistError(
        describe("rank " + std::to_string(env.rank) + " of " + std::to_string(env.world_size),
                 what + " failed (another rank exited or timed out)", {}, detail));
  };
  try {
    fn();
  } catch (const Error&) {
    throw;
  } catch (const c10::Error& e) {
    throw fail(e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw fail(e.what());
  }
}

}  // namespace

DistEnv read_dist_env() {
  DistEnv env;
  env.world_size = env_integer({"WORLD_SIZE", "SLURM_NTASKS"}, 1);
  env.rank = env_integer({"RANK", "SLURM_PROCID"}, 0);
  env.local_rank = env_integer({"LOCAL_RANK", "SLURM_LOCALID"}, 0);
  env.master_port = env_integer({"MASTER_PORT"}, 29500);
  if (const char* addr = std::getenv("MASTER_ADDR")) env.master_addr = addr;
  if (env.world_size < 1 || env.rank >= env.world_size) {
    throw ConfigError(describe("environment variables RANK / WORLD_SIZE", "rank",
                               "0 <= RANK < WORLD_SIZE",
                               std::to_string(env.rank) + " of " + std::to_string(env.world_size)));
  }
  return env;
}

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
};

ProcessGroup::ProcessGroup(const DistEnv& env, at::Device device, std::chrono::milliseconds timeout)
    : env_(env), impl_(std::make_unique<Impl>()) {
  if (env_.world_size == 1) return;
  guarded(env_, "rendezvous at " + env_.master_addr + ":" + std::to_string(env_.master_port), [&] {
    c10d::TCPStoreOptions options;
    options.port = static_cast<uint16_t>(env_.master_port);
    options.isServer = env_.rank == 0;
    options.numWorkers = static_cast<size_t>(env_.world_size);
    options.waitWorkers = true;
    options.timeout = timeout;
    impl_->store = c10::make_intrusive<c10d::PrefixStore>(
        "vilau", c10::make_intrusive<c10d::TCPStore>(env_.master_addr, options));
    if (device.is_cuda()) {
#ifdef USE_C10D_NCCL
      auto nccl = c10d::ProcessGroupNCCL::Options::create();
      nccl->timeout = timeout;
      impl_->backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(impl_->store, env_.rank,
                                                                   env_.world_size, nccl);
#else
              throw DeviceError(describe("distributed training on CUDA", "backend", "NCCL",
                                         "a LibTorch built without NCCL"));
#endif
    } else {
      auto gloo = c10d::ProcessGroupGloo::Options::create(timeout);
      gloo->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(
          env_.master_addr == "localhost" ? "127.0.0.1" : env_.master_addr));
      impl_->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, env_.rank,
                                                                   env_.world_size, gloo);
    }
  });
}

ProcessGroup::~ProcessGroup() = default;

void ProcessGroup::all_reduce_sum(at::Tensor& t) const {
  if (!distributed()) return;
  guarded(env_, "all_reduce", [&] {
    std::vector<at::Tensor> tensors = {t};
    impl_->backend->allreduce(tensors)->wait();
  });
}

void ProcessGroup::all_reduce_mean(at::Tensor& t) const {
  all_reduce_sum(t);
  if (distributed()) t.div_(static_cast<double>(env_.world_size));
}

void ProcessGroup::reduce_scatter_sum(at::Tensor& output, at::Tensor& input) const {
  if (!distributed()) {
    output.copy_(input);
    return;
  }
  guarded(env_, "reduce_scatter",
          [&] { impl_->backend->_reduce_scatter_base(output, input)->wait(); });
}

void ProcessGroup::all_gather(at::Tensor& output, at::Tensor& input) const {
  if (!distributed()) {
    output.copy_(input);
    return;
  }
  guarded(env_, "all_gather", [&] { impl_->backend->_allgather_base(output, input)->wait(); });
}

void ProcessGroup::broadcast(at::Tensor& t, int64_t root) const {
  if (!distributed()) return;
  guarded(env_, "broadcast", [&] {
    std::vector<at::Tensor> tensors = {t};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    impl_->backend->broadcast(tensors, options)->wait();
  });
}

void ProcessGroup::barrier() const {
  if (!distributed()) return;
  guarded(env_, "barrier", [&] { impl_->backend->barrier()->wait(); });
}

namespace {

class PendingWork : public ProcessGroup::Pending {
 public:
  PendingWork(DistEnv env, const char* what, c10::intrusive_ptr<c10d::Work> work)
      : env_(std::move(env)), what_(what), work_(std::move(work)) {}
  void wait() override {
    if (work_) guarded(env_, what_, [&] { work_->wait(); });
    work_.reset();
  }

 private:
  DistEnv env_;
  const char* what_;
  c10::intrusive_ptr<c10d::Work> work_;
};

// Starts a collective; a failure to start, like a failure to finish, names `what`.
template <class Start>
std::unique_ptr<ProcessGroup::Pending> start_async(const DistEnv& env, const char* what,
                                                   Start&& start) {
  c10::intrusive_ptr<c10d::Work> work;
  guarded(env, what, [&] { work = start(); });
  return std::make_unique<PendingWork>(env, what, std::move(work));
}

}  // namespace

std::unique_ptr<ProcessGroup::Pending> ProcessGroup::all_reduce_sum_async(at::Tensor& t) const {
  if (!distributed()) return std::make_unique<PendingWork>(env_, "", nullptr);
  return start_async(env_, "gradient all_reduce", [&] {
    std::vector<at::Tensor> tensors = {t};
    return impl_->backend->allreduce(tensors);
  });
}

std::unique_ptr<ProcessGroup::Pending> ProcessGroup::reduce_scatter_sum_async(
    at::Tensor& output, at::Tensor& input) const {
  if (!distributed()) {
    output.copy_(input);
    return std::make_unique<PendingWork>(env_, "", nullptr);
  }
  return start_async(env_, "gradient reduce_scatter",
                     [&] { return impl_->backend->_reduce_scatter_base(output, input); });
}

std::unique_ptr<ProcessGroup::Pending> ProcessGroup::all_gather_async(at::Tensor& output,
                                                                      at::Tensor& input) const {
  if (!distributed()) {
    output.copy_(input);
    return std::make_unique<PendingWork>(env_, "", nullptr);
  }
  return start_async(env_, "parameter all_gather",
                     [&] { return impl_->backend->_allgather_base(output, input); });
}

}  // namespace vilau
