#include "vilau/core/op_trace.h"

#include <ATen/record_function.h>

#include <set>
#include <sstream>
#include <stdexcept>

namespace vilau {

namespace {

// RecordFunction callbacks are plain function pointers; they reach the trace through this.
thread_local std::vector<OpTrace::Call>* sink = nullptr;
thread_local int depth = 0;

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

// Operators that only make a new view of existing memory, allocate it, or return their input
// unchanged; when they do copy (reshape of a strided tensor, to() another dtype), the copy
// appears as a nested operator of its own.
bool moves_no_data(const std::string& name) {
  static const std::set<std::string> names = {"aten::as_strided",
                                              "aten::view",
                                              "aten::_unsafe_view",
                                              "aten::reshape",
                                              "aten::_reshape_alias",
                                              "aten::transpose",
                                              "aten::t",
                                              "aten::permute",
                                              "aten::slice",
                                              "aten::narrow",
                                              "aten::select",
                                              "aten::expand",
                                              "aten::expand_as",
                                              "aten::unsqueeze",
                                              "aten::squeeze",
                                              "aten::alias",
                                              "aten::detach",
                                              "aten::resolve_conj",
                                              "aten::resolve_neg",
                                              "aten::contiguous",
                                              "aten::empty",
                                              "aten::empty_strided",
                                              "aten::empty_like",
                                              "aten::lift_fresh",
                                              "aten::split",
                                              "aten::chunk",
                                              "aten::unbind",
                                              "aten::view_as",
                                              "aten::flatten",
                                              "aten::unflatten",
                                              "aten::movedim",
                                              "aten::to",
                                              "aten::type_as",
                                              "aten::result_type",
                                              "aten::split_with_sizes"};
  return names.count(name) > 0;
}

void describe(std::ostringstream& out, const c10::IValue& v) {
  if (v.isTensor()) {
    const at::Tensor& t = v.toTensor();
    if (!t.defined()) {
      out << "undef";
      return;
    }
    out << c10::toString(t.scalar_type()) << t.sizes() << "@" << t.device();
  } else if (v.isInt() || v.isDouble() || v.isBool() || v.isIntList() || v.isDevice() ||
             v.isNone() || v.isString()) {
    out << v;
  } else if (v.isScalar()) {
    out << v.toScalar().toDouble();
  } else if (v.isTensorList()) {
    out << "[";
    for (const at::Tensor& t : v.toTensorVector()) out << t.sizes() << ",";
    out << "]";
  } else {
    out << v.tagKind();
  }
}

// True when the call makes the host wait for device data.
bool is_sync(const std::string& name, c10::ArrayRef<const c10::IValue> inputs) {
  if (name == "aten::_local_scalar_dense" || name == "aten::nonzero" ||
      name == "aten::masked_select" || starts_with(name, "aten::unique") || name == "aten::equal") {
    return true;
  }
  if (name == "aten::to") {  // .cpu(): an explicit request for the data on the host
    for (const c10::IValue& v : inputs) {
      if (v.isDevice() && v.toDevice().is_cpu()) return true;
    }
    return false;
  }
  if (name == "aten::copy_" && inputs.size() >= 2 && inputs[0].isTensor() && inputs[1].isTensor()) {
    return inputs[0].toTensor().is_cpu() && !inputs[1].toTensor().is_cpu();
  }
  return false;
}

std::unique_ptr<at::ObserverContext> on_enter(const at::RecordFunction& fn) {
  if (sink != nullptr) {
    OpTrace::Call call;
    call.name = fn.name();
    call.depth = depth;
    const auto inputs = fn.inputs();
    // A copy into host memory inside .cpu() is the same wait as the .cpu() itself.
    call.sync = is_sync(call.name, inputs) && !(call.name == "aten::copy_" && depth > 0);
    for (const c10::IValue& v : inputs) {
      std::ostringstream out;
      describe(out, v);
      call.inputs.push_back(out.str());
    }
    sink->push_back(std::move(call));
  }
  ++depth;
  return nullptr;
}

void on_exit(const at::RecordFunction&, at::ObserverContext*) { --depth; }

}  // namespace

OpTrace::OpTrace() {
  if (sink != nullptr) throw std::logic_error("OpTrace: a trace is already running");
  sink = &calls_;
  depth = 0;
  handle_ = at::addThreadLocalCallback(at::RecordFunctionCallback(on_enter, on_exit)
                                           .needsInputs(true)
                                           .scopes({at::RecordScope::FUNCTION}));
  active_ = true;
}

OpTrace::~OpTrace() { stop(); }

void OpTrace::stop() {
  if (!active_) return;
  at::removeCallback(handle_);
  sink = nullptr;
  active_ = false;
}

int64_t OpTrace::top_level_ops() const {
  int64_t n = 0;
  for (const Call& c : calls_) n += c.depth == 0 ? 1 : 0;
  return n;
}

int64_t OpTrace::kernels() const {
  int64_t n = 0;
  for (size_t i = 0; i < calls_.size(); ++i) {
    if (moves_no_data(calls_[i].name)) continue;
    bool leaf = true;
    for (size_t j = i + 1; j < calls_.size() && calls_[j].depth > calls_[i].depth; ++j) {
      if (!moves_no_data(calls_[j].name)) {
        leaf = false;
        break;
      }
    }
    n += leaf ? 1 : 0;
  }
  return n;
}

int64_t OpTrace::host_syncs() const {
  int64_t n = 0;
  for (const Call& c : calls_) n += c.sync ? 1 : 0;
  return n;
}

std::string OpTrace::signature() const {
  std::ostringstream out;
  for (const Call& c : calls_) {
    out << c.depth << " " << c.name;
    for (const std::string& input : c.inputs) out << " " << input;
    out << "\n";
  }
  return out.str();
}

}  // namespace vilau
