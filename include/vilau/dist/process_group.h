#pragma once
// The process group of a run, from the variables torchrun or srun set: RANK / WORLD_SIZE /
// LOCAL_RANK / MASTER_ADDR / MASTER_PORT, or SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID
// with MASTER_ADDR taken from the environment. Rendezvous is a c10d TCPStore; the backend
// is Gloo on CPU and NCCL on CUDA.
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace vilau {

struct DistEnv {
  int64_t rank = 0;
  int64_t world_size = 1;
  int64_t local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int64_t master_port = 29500;
};

// Reads the launcher's variables; a single process when none are set. ConfigError naming
// the variable when one is malformed or inconsistent (e.g. RANK >= WORLD_SIZE).
DistEnv read_dist_env();

// One group per run. Collectives fail with DistError after `timeout` instead of hanging,
// so a rank that died makes the others exit with a clear message.
class ProcessGroup {
 public:
  // world_size 1 needs no rendezvous and performs no communication.
  ProcessGroup(const DistEnv& env, at::Device device, std::chrono::milliseconds timeout);
  ~ProcessGroup();

  int64_t rank() const { return env_.rank; }
  int64_t world_size() const { return env_.world_size; }
  bool distributed() const { return env_.world_size > 1; }
  const DistEnv& env() const { return env_; }
  // In place; blocking. Sum or average across ranks.
  void all_reduce_sum(at::Tensor& t) const;
  void all_reduce_mean(at::Tensor& t) const;
  // input [world * n] -> output [n]: this rank's slice of the sum.
  void reduce_scatter_sum(at::Tensor& output, at::Tensor& input) const;
  // input [n] -> output [world * n].
  void all_gather(at::Tensor& output, at::Tensor& input) const;
  void broadcast(at::Tensor& t, int64_t root = 0) const;
  void barrier() const;

  // Asynchronous collectives for gradient buckets: a handle to wait on. The tensors must
  // stay alive until then.
  class Pending {
   public:
    virtual ~Pending() = default;
    virtual void wait() = 0;
  };
  std::unique_ptr<Pending> all_reduce_sum_async(at::Tensor& t) const;
  std::unique_ptr<Pending> reduce_scatter_sum_async(at::Tensor& output, at::Tensor& input) const;
  std::unique_ptr<Pending> all_gather_async(at::Tensor& output, at::Tensor& input) const;

 private:
  struct Impl;
  DistEnv env_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace vilau
