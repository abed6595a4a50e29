// Argument checks and output allocation shared by the CPU and CUDA
// registrations: each op validates its inputs here, flattens leading
// dimensions, allocates outputs and hands 2-D contiguous tensors to a kernel.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/lerp.h>
#include <ATen/ops/zeros.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/isnan.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "sfvq/kernels.h"

namespace sfvq::binding {

inline bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

inline void check_float_tensor(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_TYPE(is_supported_float(t.scalar_type()), "sfvq.", op, ": ", name,
                   " must be a floating-point tensor (float16, bfloat16, float32 or float64), got ",
                   t.scalar_type());
}

// True when every element is finite. Fast path: a float64 sum is finite exactly
// when no element is NaN or Inf (it cannot overflow for float32/16 data); only
// a non-finite sum (or float64 data near its range) pays for the elementwise test.
inline bool all_finite(const at::Tensor& t) {
  if (t.numel() == 0) return true;
  if (std::isfinite(t.sum(at::kDouble).item<double>())) return true;
  return at::isfinite(t).all().item<bool>();
}

// A (K, D) table of vectors: floating, 2-D, at least min_rows rows, D >= 1, finite.
inline void check_vectors(const char* op, const char* name, const at::Tensor& v, int64_t min_rows) {
  check_float_tensor(op, name, v);
  TORCH_CHECK_VALUE(v.dim() == 2, "sfvq.", op, ": ", name, " must be 2-D (K, D), got shape ", v.sizes());
  TORCH_CHECK_VALUE(v.size(0) >= min_rows, "sfvq.", op, ": ", name, " must have at least ", min_rows,
                    min_rows == 2 ? " vectors (one curve segment)" : " vector", ", got ", v.size(0));
  TORCH_CHECK_VALUE(v.size(1) >= 1, "sfvq.", op, ": ", name, " must have at least one dimension (D >= 1)");
  TORCH_CHECK_VALUE(all_finite(v), "sfvq.", op, ": ", name, " contains NaN or Inf");
}

// x of shape (..., D) against a (K, D) table: same dtype, device and width.
inline void check_inputs(const char* op, const at::Tensor& x, const char* table_name, const at::Tensor& table) {
  check_float_tensor(op, "x", x);
  TORCH_CHECK_TYPE(x.scalar_type() == table.scalar_type(), "sfvq.", op, ": x and ", table_name,
                   " must have the same dtype, got x ", x.scalar_type(), " and ", table_name, " ",
                   table.scalar_type());
  TORCH_CHECK_VALUE(x.device() == table.device(), "sfvq.", op, ": x and ", table_name,
                    " must be on the same device, got x on ", x.device(), " and ", table_name, " on ",
                    table.device());
  TORCH_CHECK_VALUE(x.dim() >= 1 && x.size(-1) == table.size(1), "sfvq.", op, ": x must have shape (..., D) with D = ",
                    table.size(1), " (the width of ", table_name, "), got x of shape ", x.sizes());
}

// Leading shape of x (all but the last dimension).
inline std::vector<int64_t> leading_shape(const at::Tensor& x) {
  return std::vector<int64_t>(x.sizes().begin(), x.sizes().end() - 1);
}

// Scalar outputs (t, coord, dist) are float32, or float64 for float64 input.
inline at::ScalarType scalar_output_type(at::ScalarType input) {
  return input == at::kDouble ? at::kDouble : at::kFloat;
}

using ProjectKernel = void (*)(const at::Tensor&, const at::Tensor&, bool, Projection&);
using NearestKernel = void (*)(const at::Tensor&, const at::Tensor&, at::Tensor&, at::Tensor&);
using DecodeKernel = void (*)(const at::Tensor&, const at::Tensor&, at::Tensor&);
using ExpandKernel = void (*)(const at::Tensor&, double, at::Tensor&);

// Each op below is registered per backend as an instantiation with that
// backend's kernel, e.g. m.impl("project", &project<&cpu::project>).
template <ProjectKernel kernel>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> project(const at::Tensor& x,
                                                                               const at::Tensor& codebook,
                                                                               c10::string_view mode) {
  TORCH_CHECK_VALUE(mode == "exact" || mode == "vertex", "sfvq.project: mode must be \"exact\" or \"vertex\", got \"",
                    std::string(mode), "\"");
  check_vectors("project", "codebook", codebook, 2);
  check_inputs("project", x, "codebook", codebook);
  const int64_t D = codebook.size(1);
  const at::Tensor x2 = x.reshape({-1, D}).contiguous();
  const int64_t N = x2.size(0);
  const auto scalar_opts = x.options().dtype(scalar_output_type(x.scalar_type()));
  Projection out{at::empty({N, D}, x.options()), at::empty({N}, x.options().dtype(at::kLong)),
                 at::empty({N}, scalar_opts), at::empty({N}, scalar_opts), at::empty({N}, scalar_opts)};
  kernel(x2, codebook.contiguous(), mode == "vertex", out);
  std::vector<int64_t> lead = leading_shape(x);
  std::vector<int64_t> point_shape = lead;
  point_shape.push_back(D);
  return {out.point.view(point_shape), out.segment.view(lead), out.t.view(lead), out.coord.view(lead),
          out.dist.view(lead)};
}

template <NearestKernel kernel>
std::tuple<at::Tensor, at::Tensor> nearest(const at::Tensor& x, const at::Tensor& points) {
  check_vectors("nearest", "points", points, 1);
  check_inputs("nearest", x, "points", points);
  const at::Tensor x2 = x.reshape({-1, points.size(1)}).contiguous();
  const int64_t N = x2.size(0);
  at::Tensor index = at::empty({N}, x.options().dtype(at::kLong));
  at::Tensor dist = at::empty({N}, x.options().dtype(scalar_output_type(x.scalar_type())));
  kernel(x2, points.contiguous(), index, dist);
  const std::vector<int64_t> lead = leading_shape(x);
  return {index.view(lead), dist.view(lead)};
}

template <DecodeKernel kernel>
at::Tensor decode(const at::Tensor& coord, const at::Tensor& codebook) {
  check_vectors("decode", "codebook", codebook, 2);
  check_float_tensor("decode", "coord", coord);
  TORCH_CHECK_VALUE(coord.device() == codebook.device(), "sfvq.decode: coord and codebook must be on the same device, got coord on ",
                    coord.device(), " and codebook on ", codebook.device());
  TORCH_CHECK_VALUE(!at::isnan(coord).any().item<bool>(), "sfvq.decode: coord contains NaN");
  const int64_t D = codebook.size(1);
  const at::Tensor u = coord.reshape({-1}).contiguous();
  at::Tensor out = at::empty({u.numel(), D}, codebook.options());
  if (u.numel() > 0) kernel(u, codebook.contiguous(), out);
  std::vector<int64_t> shape(coord.sizes().begin(), coord.sizes().end());
  shape.push_back(D);
  return out.view(shape);
}

template <ExpandKernel kernel>
at::Tensor expand(const at::Tensor& codebook, double eps) {
  check_vectors("expand", "codebook", codebook, 2);
  TORCH_CHECK_VALUE(eps > 0.0 && eps < 0.5, "sfvq.expand: eps must be in (0, 0.5), got ", eps);
  at::Tensor out = at::empty({2 * codebook.size(0), codebook.size(1)}, codebook.options());
  kernel(codebook.contiguous(), eps, out);
  return out;
}

// Training-time quantization against dithered points: p_i = c_i + r_i (c_{i+1} - c_i),
// i = 0..K-2, one r_i per segment shared by the whole batch; each row of x goes to its
// nearest p_i. Device-agnostic (it calls the registered nearest op), so it is
// registered once as CompositeExplicitAutograd; its backward lives in sfvq_ext/ops.py.
inline std::tuple<at::Tensor, at::Tensor> dithered_quantize(const at::Tensor& x, const at::Tensor& codebook,
                                                            const at::Tensor& dither) {
  check_vectors("dithered_quantize", "codebook", codebook, 2);
  check_inputs("dithered_quantize", x, "codebook", codebook);
  const int64_t segments = codebook.size(0) - 1;
  TORCH_CHECK_VALUE(dither.dim() == 1 && dither.size(0) == segments,
                    "sfvq.dithered_quantize: dither must have shape (K-1,) = (", segments,
                    ",), one value per segment, got shape ", dither.sizes());
  TORCH_CHECK_TYPE(dither.scalar_type() == codebook.scalar_type(),
                   "sfvq.dithered_quantize: dither must have the dtype of codebook (", codebook.scalar_type(),
                   "), got ", dither.scalar_type());
  TORCH_CHECK_VALUE(dither.device() == codebook.device(), "sfvq.dithered_quantize: dither must be on the device of codebook (",
                    codebook.device(), "), got ", dither.device());
  const at::Tensor points =
      at::lerp(codebook.narrow(0, 0, segments), codebook.narrow(0, 1, segments), dither.unsqueeze(1));
  static const auto nearest_op = c10::Dispatcher::singleton()
                                     .findSchemaOrThrow("sfvq::nearest", "")
                                     .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&)>();
  const at::Tensor segment = std::get<0>(nearest_op.call(x, points));
  std::vector<int64_t> point_shape(x.sizes().begin(), x.sizes().end());
  return {points.index_select(0, segment.reshape({-1})).view(point_shape), segment};
}

// Backward of dithered_quantize (a registered op, so the backward traces as one
// node). quantized = p_s = (1 - r_s) c_s + r_s c_{s+1} for each row's segment s:
// row gradients are summed per dithered point (one scatter of N rows), then given
// to the two ends by those weights and to r_s as <g_p, c_{s+1} - c_s>.
// Computes in float32 (float64 for float64) and returns the inputs' dtypes.
inline std::tuple<at::Tensor, at::Tensor> dithered_quantize_backward(const at::Tensor& grad,
                                                                     const at::Tensor& codebook,
                                                                     const at::Tensor& dither,
                                                                     const at::Tensor& segment) {
  const int64_t K = codebook.size(0), D = codebook.size(1);
  TORCH_CHECK_VALUE(grad.size(-1) == D && grad.numel() == segment.numel() * D,
                    "sfvq.dithered_quantize_backward: grad must have shape (..., ", D, ") with one row per segment index");
  const auto compute = scalar_output_type(codebook.scalar_type());
  const at::Tensor g = grad.reshape({-1, D}).to(compute);
  const at::Tensor g_points = at::zeros({K - 1, D}, g.options()).index_add_(0, segment.reshape({-1}), g);
  const at::Tensor to_end = g_points * dither.to(compute).unsqueeze(1);
  at::Tensor grad_codebook = at::zeros({K, D}, g.options());
  grad_codebook.narrow(0, 0, K - 1).add_(g_points - to_end);
  grad_codebook.narrow(0, 1, K - 1).add_(to_end);
  const at::Tensor c = codebook.to(compute);
  const at::Tensor grad_dither = (g_points * (c.narrow(0, 1, K - 1) - c.narrow(0, 0, K - 1))).sum(1);
  return {grad_codebook.to(codebook.scalar_type()), grad_dither.to(dither.scalar_type())};
}

}  // namespace sfvq::binding
