// The torch the kernels and the binding see: the LibTorch stable ABI
// (torch/csrc/stable, torch/headeronly), compiled for TORCH_TARGET_VERSION 2.10
// (CMakeLists.txt), so one build runs on every torch from 2.10 on. This header
// adds what that API lacks at 2.10, each piece small and named:
//   - aten ops it does not wrap (mm.out, lerp, index_select, isfinite, ...):
//     call_op() calls them by name through the stable dispatcher call
//     (torch_call_dispatcher). It converts Tensor, int, float, bool, dtype,
//     optionals and lists, but no Scalar: ops are called through overloads
//     without one (mul.Tensor with a 0-dim tensor, not mul.Scalar).
//   - typed errors: STD_TORCH_CHECK throws std::runtime_error (Python
//     RuntimeError); check_value() throws std::invalid_argument, which torch's
//     Python binding raises as ValueError, as before the port.
//   - item(), a dtype switch, and printing of shapes and devices in messages.
#pragma once

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

#include <array>
#include <cstdint>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace sfvq {

using Tensor = torch::stable::Tensor;
using ScalarType = torch::headeronly::ScalarType;
using DeviceType = torch::headeronly::DeviceType;
using Device = torch::stable::Device;
using Half = torch::headeronly::Half;
using BFloat16 = torch::headeronly::BFloat16;

// ---------------------------------------------------------------------------
// Messages and errors.

struct Shape {
  torch::headeronly::IntHeaderOnlyArrayRef sizes;
};
inline std::ostream& operator<<(std::ostream& os, const Shape& s) {
  os << '[';
  for (size_t i = 0; i < s.sizes.size(); ++i) os << (i ? ", " : "") << s.sizes[i];
  return os << ']';
}
inline Shape shape_of(const Tensor& t) { return {t.sizes()}; }

struct DeviceName {
  Device device;
};
inline std::ostream& operator<<(std::ostream& os, const DeviceName& d) {
  switch (d.device.type()) {
    case DeviceType::CPU: os << "cpu"; break;
    case DeviceType::CUDA: os << "cuda"; break;
    case DeviceType::Meta: os << "meta"; break;
    default: os << "device type " << static_cast<int>(d.device.type()); break;
  }
  if (d.device.has_index()) os << ':' << static_cast<int>(d.device.index());
  return os;
}
inline DeviceName device_of(const Tensor& t) { return {t.device()}; }

template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

// A bad argument: Python sees ValueError (std::invalid_argument).
template <typename... Args>
void check_value(bool ok, const Args&... message) {
  if (!ok) throw std::invalid_argument(concat(message...));
}
// A broken internal invariant: Python sees RuntimeError.
template <typename... Args>
void check_internal(bool ok, const Args&... message) {
  if (!ok) throw std::runtime_error(concat("sfvq internal error: ", message...));
}

// ---------------------------------------------------------------------------
// Registered aten ops by name, through the stable dispatcher call (2.10).

// Runs op.overload on the stack and returns its (single) output.
template <typename... Args>
Tensor call_op(const char* op, const char* overload, const Args&... args) {
  std::array<StableIValue, sizeof...(Args) == 0 ? 1 : sizeof...(Args)> stack{torch::stable::detail::from(args)...};
  STABLE_TORCH_ERROR_CODE_CHECK(torch_call_dispatcher(op, overload, stack.data(), TORCH_ABI_VERSION));
  return torch::stable::detail::to<Tensor>(stack[0]);
}

inline Tensor empty(std::vector<int64_t> shape, ScalarType dtype, Device device) {
  return torch::stable::empty(shape, dtype, std::nullopt, device);
}
inline Tensor zeros(std::vector<int64_t> shape, ScalarType dtype, Device device) {
  return call_op("aten::zeros", "", shape, std::optional<ScalarType>(dtype),
                 std::optional<torch::headeronly::Layout>(), std::optional<Device>(device), std::optional<bool>());
}
// A 0-dim tensor holding value (exactly representable in dtype), for ops whose
// Scalar overload the dispatcher call cannot reach.
inline Tensor scalar_tensor(double value, ScalarType dtype, Device device) {
  return torch::stable::full({}, value, dtype, std::nullopt, device);
}
inline Tensor to_dtype(const Tensor& t, ScalarType dtype) { return torch::stable::to(t, dtype); }
inline Tensor to_cpu(const Tensor& t) { return torch::stable::to(t, Device(DeviceType::CPU)); }

// The value of a one-element tensor on any device.
inline double item_double(const Tensor& t) {
  const Tensor c = torch::stable::to(t, ScalarType::Double, std::nullopt, Device(DeviceType::CPU));
  return *c.const_data_ptr<double>();
}
inline int64_t item_int64(const Tensor& t) {
  const Tensor c = torch::stable::to(t, ScalarType::Long, std::nullopt, Device(DeviceType::CPU));
  return *c.const_data_ptr<int64_t>();
}
inline bool item_bool(const Tensor& t) {
  const Tensor c = torch::stable::to(t, ScalarType::Bool, std::nullopt, Device(DeviceType::CPU));
  return *c.const_data_ptr<bool>();
}

// ---------------------------------------------------------------------------
// Dtype switch (for AT_DISPATCH_FLOATING_TYPES_AND2(Half, BFloat16, ...)):
// calls f(scalar_t{}) for the four floating dtypes the ops accept.
template <typename F>
decltype(auto) dispatch_floating(ScalarType t, const char* what, F&& f) {
  switch (t) {
    case ScalarType::Float: return f(float{});
    case ScalarType::Double: return f(double{});
    case ScalarType::Half: return f(Half{});
    case ScalarType::BFloat16: return f(BFloat16{});
    default: throw std::invalid_argument(concat(what, ": unsupported dtype ", t));
  }
}

template <typename T>
constexpr ScalarType scalar_type_of() {
  return torch::headeronly::CppTypeToScalarType<T>::value;
}

}  // namespace sfvq
