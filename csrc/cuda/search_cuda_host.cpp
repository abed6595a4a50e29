// Host side of the CUDA project/nearest: codebook tables (ATen ops on the
// device, O(K D)), output wiring, the NaN/Inf check and the brute-force pass
// for rows the fused kernel could not certify. The kernels are in search_cuda.cu.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "search_cuda.h"
#include "sfvq/kernels.h"
#include "sfvq/segment.h"

namespace sfvq::cuda {
namespace {

bool force_fallback = false;
// The small-codebook kernel is opt-in until it has run on a GPU (tests, sanitizer, benchmark).
bool small_k_enabled = false;
std::pair<int64_t, int64_t> last_stats{0, 0};
const char* last_kernel = "none";

// Round float32 to TF32 (10 explicit mantissa bits), to nearest with ties away
// from zero, as cvt.rna.tf32.f32 does on the device: add half a TF32 unit to the
// magnitude bits, then clear the 13 dropped bits. Finite inputs only.
at::Tensor round_to_tf32(const at::Tensor& v) {
  return v.contiguous().view(at::kInt).add(0x1000).bitwise_and(static_cast<int32_t>(0xFFFFE000u)).view(at::kFloat);
}

at::Tensor pad_columns(const at::Tensor& v, int64_t width) {
  if (v.size(-1) == width) return v.contiguous();
  std::vector<int64_t> shape(v.sizes().begin(), v.sizes().end());
  shape.back() = width;
  at::Tensor out = at::zeros(shape, v.options());
  out.narrow(-1, 0, v.size(-1)).copy_(v);
  return out;
}

float round_up(double v) { return std::nextafter(static_cast<float>(v * (1.0 + 1e-6)), INFINITY); }

// Owns the device tensors that SearchTables points into.
struct Tables {
  at::Tensor centered, mean, mean64, n, a, b, inv_b, b64;
  SearchTables view;
  double max_abs = 0;  // largest magnitude in the codebook

  Tables(const at::Tensor& codebook, bool with_segments) {
    const int64_t K = codebook.size(0), D = codebook.size(1), Dp = (D + 3) / 4 * 4;
    const at::Tensor c64 = codebook.to(at::kDouble);
    const at::Tensor mean32 = c64.mean(0).to(at::kFloat);
    const at::Tensor m64 = mean32.to(at::kDouble);
    const at::Tensor exact_centered = c64 - m64;  // c_j - m, exact to float64 rounding
    const at::Tensor cc = round_to_tf32(exact_centered.to(at::kFloat));
    const at::Tensor cc64 = cc.to(at::kDouble);
    const at::Tensor n64 = cc64.square().sum(1);
    // Two scalars for the certificates (one small device-to-host copy).
    const at::Tensor scalars =
        at::stack({n64.max().sqrt(), (cc64 - exact_centered).square().sum(1).max().sqrt(), c64.abs().max()}).cpu();
    centered = pad_columns(cc, Dp);
    mean = pad_columns(mean32, Dp);
    mean64 = pad_columns(m64, Dp);
    n = n64.to(at::kFloat);
    if (with_segments && K >= 2) {
      const at::Tensor d = cc64.narrow(0, 1, K - 1) - cc64.narrow(0, 0, K - 1);
      a = (cc64.narrow(0, 0, K - 1) * d).sum(1).to(at::kFloat);
      b = d.square().sum(1).to(at::kFloat);
      inv_b = at::where(b > 0, b.reciprocal(), at::zeros_like(b));
      b64 = (c64.narrow(0, 1, K - 1) - c64.narrow(0, 0, K - 1)).square().sum(1);
    }
    view.centered = centered.data_ptr<float>();
    view.mean = mean.data_ptr<float>();
    view.mean64 = mean64.data_ptr<double>();
    view.n = n.data_ptr<float>();
    if (a.defined()) {
      view.a = a.data_ptr<float>();
      view.b = b.data_ptr<float>();
      view.inv_b = inv_b.data_ptr<float>();
      view.b64 = b64.data_ptr<double>();
    }
    view.K = K, view.D = D, view.Dp = Dp;
    view.norm_max = round_up(scalars[0].item<double>());
    view.delta_c = round_up(scalars[1].item<double>());
    max_abs = scalars[2].item<double>();
    view.force_fallback = force_fallback;
  }
};

InputType input_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return InputType::kFloat;
    case at::kDouble: return InputType::kDouble;
    case at::kHalf: return InputType::kHalf;
    case at::kBFloat16: return InputType::kBFloat16;
    default: TORCH_CHECK_TYPE(false, "sfvq: unsupported dtype ", t);
  }
}

void check_device(const at::Tensor& x) {
  int major = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, x.device().index()));
  TORCH_CHECK(major >= 8, "sfvq: project/nearest on CUDA need compute capability 8.0 or newer (TF32 tensor cores), ",
              "got ", major, ".x on ", x.device());
}

// The fused kernel's float32/TF32 terms are safe (no overflow, and flushed
// subnormals stay inside its certificate) for a codebook whose largest entry is
// in [2^-20, 2^40] and rows whose squared norm fits float32. float16 always is.
bool codebook_in_range(const at::Tensor& table, double max_abs) {
  return table.scalar_type() == at::kHalf || max_abs == 0.0 || (max_abs >= 0x1p-20 && max_abs <= 0x1p40);
}

// The fused pass, the NaN/Inf check, then brute force for uncertified rows.
// Returns false when the call's magnitudes are outside what the fused kernel's
// float32 terms can hold; the caller then searches again on rescaled data, which
// rewrites every output.
bool run_search(const at::Tensor& x, const at::Tensor& table, bool with_segments, SearchMode mode, SearchOutputs out,
                bool brute_force) {
  const int64_t N = x.size(0), K = table.size(0);
  TORCH_CHECK_VALUE(K < std::numeric_limits<int32_t>::max(), "sfvq: at most 2^31 - 2 codebook vectors on CUDA, got ", K);
  const c10::cuda::CUDAGuard guard(x.device());
  check_device(x);
  const Tables tables(table, with_segments);
  if (!brute_force && !codebook_in_range(table, tables.max_abs)) return false;
  const at::Tensor fallback_rows = at::empty({N}, x.options().dtype(at::kLong));
  const at::Tensor status = at::empty({2}, x.options().dtype(at::kLong));
  status.select(0, 0).fill_(N);
  status.select(0, 1).zero_();
  out.fallback_rows = fallback_rows.data_ptr<int64_t>();
  out.status = status.data_ptr<int64_t>();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const InputType type = input_type(x.scalar_type());
  SearchTables view = tables.view;
  view.force_fallback = view.force_fallback || brute_force;
  const auto aligned = [](const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; };
  view.vec4 = x.scalar_type() == at::kFloat && table.size(1) % 4 == 0 && aligned(x) && aligned(table);
  // Its shared memory is at most 64 KB (K <= 32, D <= 512), within what every sm_80+ device allows.
  view.small_k = small_k_enabled && view.vec4 && K <= kSmallKMax && table.size(1) <= kSmallKMaxD;
  launch_search(type, x.data_ptr(), table.data_ptr(), N, view, mode, out, stream);
  // One synchronising copy: the NaN/Inf policy raises, and the brute-force grid needs the count.
  const at::Tensor host = status.cpu();
  const int64_t first_bad = host[0].item<int64_t>(), count = host[1].item<int64_t>();
  // A finite row whose float32 squared norm overflowed is reported like a NaN
  // row: tell the two apart (one extra reduction, only on this path).
  if (first_bad < N && !brute_force && at::isfinite(x).all().item<bool>()) return false;
  check_finite_rows(first_bad, N);
  launch_fallback(type, x.data_ptr(), table.data_ptr(), count, view, mode, out, stream);
  last_stats = {N, count};
  last_kernel = view.small_k ? "small_k" : "fused";
  return true;
}

// t * 2^e in place or as a copy, in steps of at most 2^64 (each step is exact in
// every dtype this path sees: float32, float64, bfloat16).
at::Tensor scaled_by_power_of_two(at::Tensor t, int e) {
  while (e != 0) {
    const int step = std::clamp(e, -64, 64);
    t = t * std::ldexp(1.0, step);
    e -= step;
  }
  return t;
}

// Searches x against table; when their magnitudes are outside the fused kernel's
// range (DESIGN.md section 6), searches both scaled by a power of two chosen from
// the data (exact), every row by the float64 brute force, and scales the point
// and distance outputs back (Inf where a distance exceeds the output dtype).
void search(const at::Tensor& x, const at::Tensor& table, bool with_segments, SearchMode mode, const SearchOutputs& out,
            at::Tensor* point, at::Tensor& dist) {
  if (run_search(x, table, with_segments, mode, out, /*brute_force=*/false)) return;
  const double largest = std::max(x.abs().max().item<double>(), table.abs().max().item<double>());
  const int e = scale_exponent(largest, 1 << 20);
  run_search(scaled_by_power_of_two(x, e).contiguous(), scaled_by_power_of_two(table, e).contiguous(), with_segments,
             mode, out, /*brute_force=*/true);
  if (point) point->copy_(scaled_by_power_of_two(*point, -e));
  dist.copy_(scaled_by_power_of_two(dist, -2 * e));
}

}  // namespace

void project(const at::Tensor& x, const at::Tensor& codebook, bool vertex_rule, Projection& out) {
  if (x.size(0) == 0) return;
  SearchOutputs o;
  o.point = out.point.data_ptr();
  o.index = out.segment.data_ptr<int64_t>();
  o.t = out.t.data_ptr();
  o.coord = out.coord.data_ptr();
  o.dist = out.dist.data_ptr();
  search(x, codebook, /*with_segments=*/true, vertex_rule ? SearchMode::kProjectVertex : SearchMode::kProjectExact, o,
         &out.point, out.dist);
}

void nearest(const at::Tensor& x, const at::Tensor& points, at::Tensor& index, at::Tensor& dist) {
  if (x.size(0) == 0) return;
  SearchOutputs o;
  o.index = index.data_ptr<int64_t>();
  o.dist = dist.data_ptr();
  search(x, points, /*with_segments=*/false, SearchMode::kNearest, o, nullptr, dist);
}

void set_force_fallback(bool on) { force_fallback = on; }
void set_small_k_kernel(bool on) { small_k_enabled = on; }
std::pair<int64_t, int64_t> last_search_stats() { return last_stats; }
std::string last_search_kernel() { return last_kernel; }

}  // namespace sfvq::cuda
