#pragma once
// What a piece of code dispatches, counted by LibTorch itself (RecordFunction callbacks):
// the device-independent measure of a decode step. Without a GPU, kernel-launch overhead
// and host round trips cannot be timed, but they can be counted: every ATen operator is
// a launch on a GPU, and every read of tensor data on the host is a synchronisation.
#include <cstdint>
#include <string>
#include <vector>

namespace vilau {

// Records the operators dispatched on this thread from construction to destruction (or
// stop()). Traces do not nest: one at a time per thread.
class OpTrace {
 public:
  OpTrace();
  ~OpTrace();
  OpTrace(const OpTrace&) = delete;
  OpTrace& operator=(const OpTrace&) = delete;

  void stop();

  // Every operator, nested ones included (what the dispatcher runs).
  int64_t ops() const { return static_cast<int64_t>(calls_.size()); }
  // Operators called from outside any other operator (what vilau's code calls).
  int64_t top_level_ops() const;
  // Operators that do work on the tensors' data, the count a GPU launches kernels for: the
  // leaves of the dispatch tree (no nested operator of their own does work), other than
  // views, aliases, allocations and conversions that return their input.
  int64_t kernels() const;
  // Points where the host waits for the device's results: scalar reads (item), explicit
  // moves to the CPU, copies from a device into host memory, and operators whose output
  // size depends on the data (nonzero, masked_select, unique, equal).
  int64_t host_syncs() const;
  // One line per operator: nesting, name, and each argument's shape, dtype or value. Two
  // steps are the same static step exactly when their signatures are equal.
  std::string signature() const;

  struct Call {
    std::string name;
    int depth = 0;                    // 0: called from outside any operator
    bool sync = false;                // see host_syncs()
    std::vector<std::string> inputs;  // each argument: shape and dtype, or value
  };
  const std::vector<Call>& calls() const { return calls_; }

 private:
  std::vector<Call> calls_;
  uint64_t handle_ = 0;
  bool active_ = false;
};

}  // namespace vilau
