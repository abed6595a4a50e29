// Argument checks and output allocation shared by the CPU and CUDA
// registrations: each op validates its inputs here, flattens leading
// dimensions, allocates outputs and hands 2-D contiguous tensors to a kernel.
// Torch through its stable ABI only (sfvq/stable.h). Bad arguments raise
// ValueError (std::invalid_argument); the public wrappers in sfvq_ext/ops.py
// check tensor-ness and dtypes first, so that those raise TypeError.
#pragma once

#include <cmath>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "sfvq/kernels.h"
#include "sfvq/stable.h"

namespace sfvq::binding {

inline bool is_supported_float(ScalarType t) {
  return t == ScalarType::Float || t == ScalarType::Double || t == ScalarType::Half || t == ScalarType::BFloat16;
}

inline void check_float_tensor(const char* op, const char* name, const Tensor& t) {
  check_value(is_supported_float(t.scalar_type()), "sfvq.", op, ": ", name,
              " must be a floating-point tensor (float16, bfloat16, float32 or float64), got ", t.scalar_type());
}

// Registered aten ops without a stable wrapper at 2.10 (sfvq/stable.h: call_op).
inline Tensor isfinite(const Tensor& t) { return call_op("aten::isfinite", "", t); }
inline bool all_true(const Tensor& t) { return item_bool(call_op("aten::all", "", t)); }
inline bool any_true(const Tensor& t) { return item_bool(call_op("aten::any", "", t)); }

// True when every element is finite. Fast path: a float64 sum is finite exactly
// when no element is NaN or Inf (it cannot overflow for float32/16 data); only
// a non-finite sum (or float64 data near its range) pays for the elementwise test.
inline bool all_finite(const Tensor& t) {
  if (t.numel() == 0) return true;
  if (std::isfinite(item_double(torch::stable::sum(t, std::nullopt, false, ScalarType::Double)))) return true;
  return all_true(isfinite(t));
}

// A (K, D) table of vectors: floating, 2-D, at least min_rows rows, D >= 1, finite.
inline void check_vectors(const char* op, const char* name, const Tensor& v, int64_t min_rows) {
  check_float_tensor(op, name, v);
  check_value(v.dim() == 2, "sfvq.", op, ": ", name, " must be 2-D (K, D), got shape ", shape_of(v));
  check_value(v.size(0) >= min_rows, "sfvq.", op, ": ", name, " must have at least ", min_rows,
              min_rows == 2 ? " vectors (one curve segment)" : " vector", ", got ", v.size(0));
  check_value(v.size(1) >= 1, "sfvq.", op, ": ", name, " must have at least one dimension (D >= 1)");
  check_value(all_finite(v), "sfvq.", op, ": ", name, " contains NaN or Inf");
}

// x of shape (..., D) against a (K, D) table: same dtype, device and width.
inline void check_inputs(const char* op, const Tensor& x, const char* table_name, const Tensor& table) {
  check_float_tensor(op, "x", x);
  check_value(x.scalar_type() == table.scalar_type(), "sfvq.", op, ": x and ", table_name,
              " must have the same dtype, got x ", x.scalar_type(), " and ", table_name, " ", table.scalar_type());
  check_value(x.device() == table.device(), "sfvq.", op, ": x and ", table_name,
              " must be on the same device, got x on ", device_of(x), " and ", table_name, " on ", device_of(table));
  check_value(x.dim() >= 1 && x.size(x.dim() - 1) == table.size(1), "sfvq.", op,
              ": x must have shape (..., D) with D = ", table.size(1), " (the width of ", table_name,
              "), got x of shape ", shape_of(x));
}

// Shape of t, or of t without its last dimension.
inline std::vector<int64_t> shape_vector(const Tensor& t) {
  const auto sizes = t.sizes();
  return std::vector<int64_t>(sizes.begin(), sizes.end());
}
inline std::vector<int64_t> leading_shape(const Tensor& x) {
  std::vector<int64_t> shape = shape_vector(x);
  shape.pop_back();
  return shape;
}

// Scalar outputs (t, coord, dist) are float32, or float64 for float64 input.
inline ScalarType scalar_output_type(ScalarType input) {
  return input == ScalarType::Double ? ScalarType::Double : ScalarType::Float;
}

inline Tensor flat_rows(const Tensor& x, int64_t D) { return torch::stable::contiguous(torch::stable::reshape(x, {-1, D})); }

using ProjectKernel = void (*)(const Tensor&, const Tensor&, bool, Projection&);
using NearestKernel = void (*)(const Tensor&, const Tensor&, Tensor&, Tensor&);
using DecodeKernel = void (*)(const Tensor&, const Tensor&, Tensor&);
using ExpandKernel = void (*)(const Tensor&, double, Tensor&);

// Each op below is registered per backend as an instantiation with that
// backend's kernel, e.g. m.impl("project", TORCH_BOX(&project<&cpu::project>)).
template <ProjectKernel kernel>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> project(Tensor x, Tensor codebook, std::string mode) {
  check_value(mode == "exact" || mode == "vertex", "sfvq.project: mode must be \"exact\" or \"vertex\", got \"", mode,
              "\"");
  check_vectors("project", "codebook", codebook, 2);
  check_inputs("project", x, "codebook", codebook);
  const int64_t D = codebook.size(1);
  const Tensor x2 = flat_rows(x, D);
  const int64_t N = x2.size(0);
  const Device device = x.device();
  const ScalarType scalar_type = scalar_output_type(x.scalar_type());
  Projection out{empty({N, D}, x.scalar_type(), device), empty({N}, ScalarType::Long, device),
                 empty({N}, scalar_type, device), empty({N}, scalar_type, device), empty({N}, scalar_type, device)};
  kernel(x2, torch::stable::contiguous(codebook), mode == "vertex", out);
  const std::vector<int64_t> lead = leading_shape(x);
  std::vector<int64_t> point_shape = lead;
  point_shape.push_back(D);
  return {torch::stable::view(out.point, point_shape), torch::stable::view(out.segment, lead),
          torch::stable::view(out.t, lead), torch::stable::view(out.coord, lead), torch::stable::view(out.dist, lead)};
}

template <NearestKernel kernel>
std::tuple<Tensor, Tensor> nearest(Tensor x, Tensor points) {
  check_vectors("nearest", "points", points, 1);
  check_inputs("nearest", x, "points", points);
  const Tensor x2 = flat_rows(x, points.size(1));
  const int64_t N = x2.size(0);
  Tensor index = empty({N}, ScalarType::Long, x.device());
  Tensor dist = empty({N}, scalar_output_type(x.scalar_type()), x.device());
  kernel(x2, torch::stable::contiguous(points), index, dist);
  const std::vector<int64_t> lead = leading_shape(x);
  return {torch::stable::view(index, lead), torch::stable::view(dist, lead)};
}

template <DecodeKernel kernel>
Tensor decode(Tensor coord, Tensor codebook) {
  check_vectors("decode", "codebook", codebook, 2);
  check_float_tensor("decode", "coord", coord);
  check_value(coord.device() == codebook.device(), "sfvq.decode: coord and codebook must be on the same device, got coord on ",
              device_of(coord), " and codebook on ", device_of(codebook));
  check_value(!any_true(call_op("aten::isnan", "", coord)), "sfvq.decode: coord contains NaN");
  const int64_t D = codebook.size(1);
  const Tensor u = torch::stable::contiguous(torch::stable::reshape(coord, {-1}));
  Tensor out = empty({u.numel(), D}, codebook.scalar_type(), codebook.device());
  if (u.numel() > 0) kernel(u, torch::stable::contiguous(codebook), out);
  std::vector<int64_t> shape = shape_vector(coord);
  shape.push_back(D);
  return torch::stable::view(out, shape);
}

template <ExpandKernel kernel>
Tensor expand(Tensor codebook, double eps) {
  check_vectors("expand", "codebook", codebook, 2);
  check_value(eps > 0.0 && eps < 0.5, "sfvq.expand: eps must be in (0, 0.5), got ", eps);
  Tensor out = empty({2 * codebook.size(0), codebook.size(1)}, codebook.scalar_type(), codebook.device());
  kernel(torch::stable::contiguous(codebook), eps, out);
  return out;
}

// Training-time quantization against dithered points: p_i = c_i + r_i (c_{i+1} - c_i),
// i = 0..K-2, one r_i per segment shared by the whole batch; each row of x goes to its
// nearest p_i. Registered per backend with that backend's nearest (an instantiation,
// like the ops above: no second trip through the dispatcher); its backward lives in
// sfvq_ext/ops.py.
template <NearestKernel kernel>
std::tuple<Tensor, Tensor> dithered_quantize(Tensor x, Tensor codebook, Tensor dither) {
  check_vectors("dithered_quantize", "codebook", codebook, 2);
  check_inputs("dithered_quantize", x, "codebook", codebook);
  const int64_t segments = codebook.size(0) - 1;
  check_value(dither.dim() == 1 && dither.size(0) == segments, "sfvq.dithered_quantize: dither must have shape (K-1,) = (",
              segments, ",), one value per segment, got shape ", shape_of(dither));
  check_value(dither.scalar_type() == codebook.scalar_type(), "sfvq.dithered_quantize: dither must have the dtype of codebook (",
              codebook.scalar_type(), "), got ", dither.scalar_type());
  check_value(dither.device() == codebook.device(), "sfvq.dithered_quantize: dither must be on the device of codebook (",
              device_of(codebook), "), got ", device_of(dither));
  const Tensor points = call_op("aten::lerp", "Tensor", torch::stable::narrow(codebook, 0, 0, segments),
                                torch::stable::narrow(codebook, 0, 1, segments), torch::stable::unsqueeze(dither, 1));
  const Tensor segment = std::get<0>(nearest<kernel>(x, points));
  const Tensor chosen = call_op("aten::index_select", "", points, int64_t{0}, torch::stable::reshape(segment, {-1}));
  return {torch::stable::view(chosen, shape_vector(x)), segment};
}

// Backward of dithered_quantize (a registered op, so the backward traces as one
// node). quantized = p_s = (1 - r_s) c_s + r_s c_{s+1} for each row's segment s:
// row gradients are summed per dithered point (one scatter of N rows), then given
// to the two ends by those weights and to r_s as <g_p, c_{s+1} - c_s>.
// Computes in float32 (float64 for float64) and returns the inputs' dtypes.
// aten ops only (device-agnostic); ops with a Scalar argument (add's alpha,
// index_add_) are out of the dispatcher call's reach, so sums are
// subtract(a, b, -1). The scatter must give the same bits every run (fit promises
// the same curve for the same seed): on CPU, index_put_ with accumulate adds with
// atomics across threads, so its rounding changes from run to run; scatter_add on an
// expanded index sorts the rows by segment and sums each segment's rows in order.
// On CUDA index_put_ with accumulate is the sort-based, deterministic one.
inline std::tuple<Tensor, Tensor> dithered_quantize_backward(Tensor grad, Tensor codebook, Tensor dither, Tensor segment) {
  const int64_t K = codebook.size(0), D = codebook.size(1);
  check_value(grad.dim() >= 1 && grad.size(grad.dim() - 1) == D && grad.numel() == segment.numel() * D,
              "sfvq.dithered_quantize_backward: grad must have shape (..., ", D, ") with one row per segment index");
  const ScalarType compute = scalar_output_type(codebook.scalar_type());
  const auto plus = [](const Tensor& a, const Tensor& b) { return torch::stable::subtract(a, b, -1.0); };
  const auto times = [](const Tensor& a, const Tensor& b) { return call_op("aten::mul", "Tensor", a, b); };
  const Tensor g = to_dtype(torch::stable::reshape(grad, {-1, D}), compute);
  const Tensor flat_rows = torch::stable::reshape(segment, {-1});
  const Tensor g_points =
      g.device().type() == DeviceType::CUDA
          ? call_op("aten::index_put_", "", zeros({K - 1, D}, compute, g.device()),
                    std::vector<std::optional<Tensor>>{flat_rows}, g, true)
          : call_op("aten::scatter_add", "", zeros({K - 1, D}, compute, g.device()), int64_t{0},
                    call_op("aten::expand", "", torch::stable::unsqueeze(flat_rows, 1),
                            std::vector<int64_t>{flat_rows.size(0), D}, false),
                    g);
  const Tensor to_end = times(g_points, torch::stable::unsqueeze(to_dtype(dither, compute), 1));
  // Rows 0..K-2 get g_points - to_end, rows 1..K-1 get to_end.
  const Tensor grad_codebook = plus(torch::stable::pad(torch::stable::subtract(g_points, to_end), {0, 0, 0, 1}),
                                    torch::stable::pad(to_end, {0, 0, 1, 0}));
  Tensor c = to_dtype(codebook, compute);
  const Tensor steps = torch::stable::subtract(torch::stable::narrow(c, 0, 1, K - 1), torch::stable::narrow(c, 0, 0, K - 1));
  const Tensor grad_dither = torch::stable::sum(times(g_points, steps), std::vector<int64_t>{1});
  return {to_dtype(grad_codebook, codebook.scalar_type()), to_dtype(grad_dither, dither.scalar_type())};
}

}  // namespace sfvq::binding
