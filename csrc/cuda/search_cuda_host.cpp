// Host side of the CUDA project/nearest: codebook tables (aten ops on the
// device, O(K D)), output wiring, the NaN/Inf check and the brute-force pass
// for rows the fused kernel could not certify. The kernels are in search_cuda.cu.
// Torch through its stable ABI: the aten ops that torch::stable does not wrap
// at 2.10 are called by name (call_op, sfvq/stable.h), the same ops as before
// the port, so the tables are the same bits; none with a Scalar argument
// (the dispatcher call cannot pass one): products with a 0-dim tensor instead.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "search_cuda.h"
#include "sfvq/kernels.h"
#include "sfvq/segment.h"
#include "stable_cuda.h"

namespace sfvq::cuda {
namespace {

bool force_fallback = false;
// The small-codebook kernel is opt-in until it has run on a GPU (tests, sanitizer, benchmark).
bool small_k_enabled = false;
std::pair<int64_t, int64_t> last_stats{0, 0};
const char* last_kernel = "none";

std::vector<int64_t> shape_vector(const Tensor& t) {
  const auto sizes = t.sizes();
  return std::vector<int64_t>(sizes.begin(), sizes.end());
}

// aten ops by name (sfvq/stable.h: call_op).
Tensor mul(const Tensor& a, const Tensor& b) { return call_op("aten::mul", "Tensor", a, b); }
Tensor square(const Tensor& a) { return mul(a, a); }  // at::square is pow(a, 2), computed as a * a
Tensor sum_rows(const Tensor& a) { return torch::stable::sum(a, std::vector<int64_t>{1}); }
Tensor max_all(const Tensor& a) { return call_op("aten::max", "", a); }
Tensor abs(const Tensor& a) { return call_op("aten::abs", "", a); }
Tensor to_type(const Tensor& a, ScalarType t) { return to_dtype(a, t); }
// 1 / v where v > 0, else 0.
Tensor inverse_or_zero(const Tensor& v) {
  const Tensor positive = call_op("aten::gt", "Tensor", v, scalar_tensor(0.0, v.scalar_type(), v.device()));
  return call_op("aten::where", "self", positive, call_op("aten::reciprocal", "", v),
                 zeros(shape_vector(v), v.scalar_type(), v.device()));
}

// Round float32 to TF32 as the device does (search_cuda.h: launch_round_to_tf32), on a copy.
Tensor round_to_tf32(const Tensor& v) {
  Tensor out = torch::stable::clone(torch::stable::contiguous(v));
  launch_round_to_tf32(out.mutable_data_ptr<float>(), out.numel(), current_stream(out));
  return out;
}

Tensor pad_columns(const Tensor& v, int64_t width) {
  if (v.size(v.dim() - 1) == width) return torch::stable::contiguous(v);
  std::vector<int64_t> shape = shape_vector(v);
  shape.back() = width;
  Tensor out = zeros(shape, v.scalar_type(), v.device());
  Tensor head = torch::stable::narrow(out, v.dim() - 1, 0, v.size(v.dim() - 1));
  torch::stable::copy_(head, v);
  return out;
}

float round_up(double v) { return std::nextafter(static_cast<float>(v * (1.0 + 1e-6)), INFINITY); }

// Owns the device tensors that SearchTables points into.
struct Tables {
  Tensor centered, mean, mean64, n, a, b, inv_b, b64;
  SearchTables view;
  double max_abs = 0;  // largest magnitude in the codebook

  Tables(const Tensor& codebook, bool with_segments) {
    const int64_t K = codebook.size(0), D = codebook.size(1), Dp = (D + 3) / 4 * 4;
    Tensor c64 = to_type(codebook, ScalarType::Double);
    const Tensor mean32 = to_type(call_op("aten::mean", "dim", c64, std::optional<std::vector<int64_t>>(std::vector<int64_t>{0}), false,
                                          std::optional<ScalarType>()),
                                  ScalarType::Float);
    const Tensor m64 = to_type(mean32, ScalarType::Double);
    const Tensor exact_centered = torch::stable::subtract(c64, m64);  // c_j - m, exact to float64 rounding
    const Tensor cc = round_to_tf32(to_type(exact_centered, ScalarType::Float));
    Tensor cc64 = to_type(cc, ScalarType::Double);
    const Tensor n64 = sum_rows(square(cc64));
    // Two scalars for the certificates (one small device-to-host copy).
    const std::vector<Tensor> parts{call_op("aten::sqrt", "", max_all(n64)),
                                    call_op("aten::sqrt", "", max_all(sum_rows(square(torch::stable::subtract(cc64, exact_centered))))),
                                    max_all(abs(c64))};
    const Tensor scalars = to_cpu(call_op("aten::stack", "", parts, int64_t{0}));
    const double* host = scalars.const_data_ptr<double>();
    centered = pad_columns(cc, Dp);
    mean = pad_columns(mean32, Dp);
    mean64 = pad_columns(m64, Dp);
    n = to_type(n64, ScalarType::Float);
    if (with_segments && K >= 2) {
      const Tensor d = torch::stable::subtract(torch::stable::narrow(cc64, 0, 1, K - 1), torch::stable::narrow(cc64, 0, 0, K - 1));
      a = to_type(sum_rows(mul(torch::stable::narrow(cc64, 0, 0, K - 1), d)), ScalarType::Float);
      b = to_type(sum_rows(square(d)), ScalarType::Float);
      inv_b = inverse_or_zero(b);
      b64 = sum_rows(square(torch::stable::subtract(torch::stable::narrow(c64, 0, 1, K - 1), torch::stable::narrow(c64, 0, 0, K - 1))));
    }
    view.centered = centered.const_data_ptr<float>();
    view.mean = mean.const_data_ptr<float>();
    view.mean64 = mean64.const_data_ptr<double>();
    view.n = n.const_data_ptr<float>();
    if (a.defined()) {
      view.a = a.const_data_ptr<float>();
      view.b = b.const_data_ptr<float>();
      view.inv_b = inv_b.const_data_ptr<float>();
      view.b64 = b64.const_data_ptr<double>();
    }
    view.K = K, view.D = D, view.Dp = Dp;
    view.norm_max = round_up(host[0]);
    view.delta_c = round_up(host[1]);
    max_abs = host[2];
    view.force_fallback = force_fallback;
  }
};

InputType input_type(ScalarType t) {
  switch (t) {
    case ScalarType::Float: return InputType::kFloat;
    case ScalarType::Double: return InputType::kDouble;
    case ScalarType::Half: return InputType::kHalf;
    case ScalarType::BFloat16: return InputType::kBFloat16;
    default: throw std::invalid_argument(concat("sfvq: unsupported dtype ", t));
  }
}

void check_device(const Tensor& x) {
  int major = 0;
  STD_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device_index(x)));
  if (major < 8)
    throw std::runtime_error(concat("sfvq: project/nearest on CUDA need compute capability 8.0 or newer (TF32 tensor cores), ",
                                    "got ", major, ".x on ", device_of(x)));
}

// The fused kernel's float32/TF32 terms are safe (no overflow, and flushed
// subnormals stay inside its certificate) for a codebook whose largest entry is
// in [2^-20, 2^40] and rows whose squared norm fits float32. float16 always is.
bool codebook_in_range(const Tensor& table, double max_abs) {
  return table.scalar_type() == ScalarType::Half || max_abs == 0.0 || (max_abs >= 0x1p-20 && max_abs <= 0x1p40);
}

// The fused pass, the NaN/Inf check, then brute force for uncertified rows.
// Returns false when the call's magnitudes are outside what the fused kernel's
// float32 terms can hold; the caller then searches again on rescaled data, which
// rewrites every output.
bool run_search(const Tensor& x, const Tensor& table, bool with_segments, SearchMode mode, SearchOutputs out,
                bool brute_force) {
  const int64_t N = x.size(0), K = table.size(0);
  check_value(K < std::numeric_limits<int32_t>::max(), "sfvq: at most 2^31 - 2 codebook vectors on CUDA, got ", K);
  const DeviceGuard guard(device_index(x));
  check_device(x);
  const Tables tables(table, with_segments);
  if (!brute_force && !codebook_in_range(table, tables.max_abs)) return false;
  const Tensor fallback_rows = empty({N}, ScalarType::Long, x.device());
  Tensor status = empty({2}, ScalarType::Long, x.device());
  torch::stable::fill_(torch::stable::select(status, 0, 0), static_cast<double>(N));
  Tensor second = torch::stable::select(status, 0, 1);
  torch::stable::zero_(second);
  out.fallback_rows = fallback_rows.mutable_data_ptr<int64_t>();
  out.status = status.mutable_data_ptr<int64_t>();
  const cudaStream_t stream = current_stream(x);
  const InputType type = input_type(x.scalar_type());
  SearchTables view = tables.view;
  view.force_fallback = view.force_fallback || brute_force;
  const auto aligned = [](const Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; };
  view.vec4 = x.scalar_type() == ScalarType::Float && table.size(1) % 4 == 0 && aligned(x) && aligned(table);
  // Its shared memory is at most 64 KB (K <= 32, D <= 512), within what every sm_80+ device allows.
  view.small_k = small_k_enabled && view.vec4 && K <= kSmallKMax && table.size(1) <= kSmallKMaxD;
  launch_search(type, x.data_ptr(), table.data_ptr(), N, view, mode, out, stream);
  // One synchronising copy: the NaN/Inf policy raises, and the brute-force grid needs the count.
  const Tensor host = to_cpu(status);
  const int64_t first_bad = host.const_data_ptr<int64_t>()[0], count = host.const_data_ptr<int64_t>()[1];
  // A finite row whose float32 squared norm overflowed is reported like a NaN
  // row: tell the two apart (one extra reduction, only on this path).
  if (first_bad < N && !brute_force && item_bool(call_op("aten::all", "", call_op("aten::isfinite", "", x)))) return false;
  check_finite_rows(first_bad, N);
  launch_fallback(type, x.data_ptr(), table.data_ptr(), count, view, mode, out, stream);
  last_stats = {N, count};
  last_kernel = view.small_k ? "small_k" : "fused";
  return true;
}

// t * 2^e in place or as a copy, in steps of at most 2^64 (each step is exact in
// every dtype this path sees: float32, float64, bfloat16).
Tensor scaled_by_power_of_two(Tensor t, int e) {
  while (e != 0) {
    const int step = std::clamp(e, -64, 64);
    t = mul(t, scalar_tensor(std::ldexp(1.0, step), t.scalar_type(), t.device()));
    e -= step;
  }
  return t;
}

// Searches x against table; when their magnitudes are outside the fused kernel's
// range (DESIGN.md section 6), searches both scaled by a power of two chosen from
// the data (exact), every row by the float64 brute force, and scales the point
// and distance outputs back (Inf where a distance exceeds the output dtype).
void search(const Tensor& x, const Tensor& table, bool with_segments, SearchMode mode, const SearchOutputs& out,
            Tensor* point, Tensor& dist) {
  if (run_search(x, table, with_segments, mode, out, /*brute_force=*/false)) return;
  const double largest = std::max(item_double(max_all(abs(x))), item_double(max_all(abs(table))));
  const int e = scale_exponent(largest, 1 << 20);
  run_search(torch::stable::contiguous(scaled_by_power_of_two(x, e)),
             torch::stable::contiguous(scaled_by_power_of_two(table, e)), with_segments, mode, out,
             /*brute_force=*/true);
  if (point) torch::stable::copy_(*point, scaled_by_power_of_two(*point, -e));
  torch::stable::copy_(dist, scaled_by_power_of_two(dist, -2 * e));
}

}  // namespace

void project(const Tensor& x, const Tensor& codebook, bool vertex_rule, Projection& out) {
  if (x.size(0) == 0) return;
  SearchOutputs o;
  o.point = out.point.data_ptr();
  o.index = out.segment.mutable_data_ptr<int64_t>();
  o.t = out.t.data_ptr();
  o.coord = out.coord.data_ptr();
  o.dist = out.dist.data_ptr();
  search(x, codebook, /*with_segments=*/true, vertex_rule ? SearchMode::kProjectVertex : SearchMode::kProjectExact, o,
         &out.point, out.dist);
}

void nearest(const Tensor& x, const Tensor& points, Tensor& index, Tensor& dist) {
  if (x.size(0) == 0) return;
  SearchOutputs o;
  o.index = index.mutable_data_ptr<int64_t>();
  o.dist = dist.data_ptr();
  search(x, points, /*with_segments=*/false, SearchMode::kNearest, o, nullptr, dist);
}

void set_force_fallback(bool on) { force_fallback = on; }
void set_small_k_kernel(bool on) { small_k_enabled = on; }
std::pair<int64_t, int64_t> last_search_stats() { return last_stats; }
std::string last_search_kernel() { return last_kernel; }

}  // namespace sfvq::cuda
