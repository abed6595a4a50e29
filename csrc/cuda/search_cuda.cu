// CUDA nearest-segment projection and nearest-point search: one fused pass.
//
// Each block owns BM rows of x and walks the whole codebook in BN-column
// tiles. A tile of G = X_c C_c^T (both centred on the codebook mean, rounded
// to TF32) is computed on the tensor cores (mma.sync m16n8k8, float32
// accumulation) from a cp.async pipeline, written to shared memory, and
// scored: segment i needs columns i and i+1 (the last column of a tile is
// carried into the next). Each row keeps its kKeep + 1 best (score, index)
// pairs; no N x K buffer exists.
//
// The scores are approximate (TF32 operands). After the last tile every row
// is finished exactly, in float64 from the original values, by one warp:
//   * candidates are evaluated in score order while their certified lower
//     bound (below) does not exceed the best exact distance found so far;
//   * the row is certified if the (kKeep+1)-th score's lower bound exceeds the
//     best exact distance: no segment outside the list can be nearer.
// Rows that cannot be certified (near-ties among many segments, folded or
// repeated curves) go to a list that a brute-force float64 kernel finishes.
// So every answer equals the float64 optimum; TF32 only decides how fast.
//
// Lower bound. Let x~, c~ be the rounded centred input and codebook. The score
// s~ approximates dist(x~, segment of c~) - ||x~||^2 within E (float32
// accumulation and rounding, see score_error_bound). Rounding moved x by at
// most dx and every vertex by at most dc, and distance to a segment is
// 1-Lipschitz in both, so the exact distance is at least
//   (sqrt(max(s~ + ||x~||^2 - E, 0)) - dx - dc)^2     (0 if the root is negative).
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "search_cuda.h"
#include "sfvq/segment.h"

namespace sfvq::cuda {
namespace {

constexpr int kThreads = 256;          // 8 warps: 2 (rows) x 4 (columns) of 64 x 32 each
constexpr int BM = 128, BN = 128, BK = 32;
constexpr int kStages = 3;             // cp.async pipeline depth
constexpr int kLd = BK + 4;            // A/B tile row stride (floats): conflict-free 16-byte fragment loads
constexpr int kGLd = BN + 2;           // G tile row stride: conflict-free epilogue reads
constexpr int kKeep = 4;               // candidates kept per row; one more is the certificate
constexpr int kList = kKeep + 1;
constexpr int kFallbackThreads = 256;

constexpr size_t kSmemBytes =
    sizeof(float) * (size_t(kStages) * (BM + BN) * kLd + size_t(BM) * kGLd + 3 * BM + BM * kList) +
    sizeof(int) * (BM * kList + BM);

template <typename T>
__device__ __forceinline__ double to_double(T v) {
  if constexpr (std::is_same_v<T, double>) return v;
  else return static_cast<double>(static_cast<float>(v));
}

template <typename T>
__device__ __forceinline__ T from_double(double v) {
  if constexpr (std::is_same_v<T, double>) return v;
  else if constexpr (std::is_same_v<T, float>) return static_cast<float>(v);
  else return T(static_cast<float>(v));
}

template <typename T>
using out_type = std::conditional_t<std::is_same_v<T, double>, double, float>;

__device__ __forceinline__ float round_tf32(float v) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
  return __uint_as_float(r);
}

__device__ __forceinline__ void mma_tf32(float (&c)[4], float a0, float a1, float a2, float a3, float b0, float b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(__float_as_uint(a0)), "r"(__float_as_uint(a1)), "r"(__float_as_uint(a2)), "r"(__float_as_uint(a3)),
        "r"(__float_as_uint(b0)), "r"(__float_as_uint(b1)));
}

// 16-byte asynchronous copy; src_bytes = 0 writes zeros (out-of-range rows/columns).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

template <typename V>
__device__ __forceinline__ V warp_sum(V v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// (score, index) order: smaller score first, then smaller index.
__device__ __forceinline__ bool before(float s, int i, float s2, int i2) { return s < s2 || (s == s2 && i < i2); }

// Insert (s, i) into a sorted list of kList entries (registers, constant indices only).
__device__ __forceinline__ void insert(float (&ts)[kList], int (&ti)[kList], float s, int i) {
  if (!before(s, i, ts[kList - 1], ti[kList - 1])) return;
#pragma unroll
  for (int q = kList - 1; q > 0; --q) {
    if (before(s, i, ts[q - 1], ti[q - 1])) {
      ts[q] = ts[q - 1];
      ti[q] = ti[q - 1];
    } else if (before(s, i, ts[q], ti[q])) {
      ts[q] = s;
      ti[q] = i;
    }
  }
  if (before(s, i, ts[0], ti[0])) {
    ts[0] = s;
    ti[0] = i;
  }
}

// Bound on |score - (dist(x~, item of c~) - ||x~||^2)| from float32 arithmetic:
// G entries accumulate D exact TF32 products in float32 (error <= D u ||x|| ||c||,
// u = 2^-23 allowing truncating accumulation; a score weighs two of them by
// (1-t) and t, times 2), the tables are float32 roundings of float64 values,
// a handful of operations round the score, and ||x~||^2 sums D squares.
// Doubled for margin.
__device__ __forceinline__ double score_error_bound(double xn, double cn, int64_t D) {
  const double u = 1.0 / 8388608.0;  // 2^-23
  const double d = static_cast<double>(D) + 2.0;
  const double spread = (xn + 2.0 * cn) * (xn + 2.0 * cn);
  return 2.0 * (2.0 * d * u * xn * cn + 8.0 * u * spread + d * u * xn * xn);
}

struct ExactFit {
  int item = -1;  // segment or vertex index
  double t = 0;
  double dist = INFINITY;
};

__device__ __forceinline__ bool better(const ExactFit& f, const ExactFit& best) {
  return f.dist < best.dist || (f.dist == best.dist && f.item < best.item);
}

// Calls f(x_k, a_k, b_k) (as float64) for every element k of this lane's share
// of rows xr, a, b. float32 rows that are 16-byte aligned with D % 4 == 0
// (tb.vec4) are read 4 elements at a time, so a lane has all its loads in flight at once.
template <typename T, typename F>
__device__ __forceinline__ void for_lane_elements(const T* __restrict__ xr, const T* __restrict__ a,
                                                  const T* __restrict__ b, int64_t D, bool vec4, int lane, F&& f) {
  if constexpr (std::is_same_v<T, float>) {
    if (vec4) {
      const float4* x4 = reinterpret_cast<const float4*>(xr);
      const float4* a4 = reinterpret_cast<const float4*>(a);
      const float4* b4 = reinterpret_cast<const float4*>(b);
#pragma unroll 4
      for (int64_t k = lane; k < D / 4; k += 32) {
        const float4 xv = x4[k], av = a4[k], bv = b4[k];
        f(double(xv.x), double(av.x), double(bv.x));
        f(double(xv.y), double(av.y), double(bv.y));
        f(double(xv.z), double(av.z), double(bv.z));
        f(double(xv.w), double(av.w), double(bv.w));
      }
      return;
    }
  }
#pragma unroll 8
  for (int64_t k = lane; k < D; k += 32) f(to_double(xr[k]), to_double(a[k]), to_double(b[k]));
}

// Exact float64 distance from row xr to segment i (whole warp; every lane gets the result).
// t comes from exact_segment_t (exactly 0 or 1 at the ends); the distance is always summed directly with
// squared_gap (sfvq/segment.h), the one formula of the CPU kernel too, so exact
// ties (segments j-1 at t = 1 and j at t = 0) stay exact and go to the smaller index.
template <typename T>
__device__ ExactFit warp_fit_segment(const T* __restrict__ xr, const T* __restrict__ cb, const SearchTables& tb, int i,
                                     int lane) {
  const int64_t D = tb.D;
  const T* c0 = cb + int64_t(i) * D;
  const T* c1 = c0 + D;
  double p0 = 0, p1 = 0;
  for_lane_elements(xr, c0, c1, D, tb.vec4, lane, [&](double xk, double ak, double bk) {
    p0 = fma(xk - ak, bk - ak, p0);
    p1 = fma(bk - xk, bk - ak, p1);
  });
  p0 = warp_sum(p0);
  p1 = warp_sum(p1);
  ExactFit f;
  f.item = i;
  f.t = exact_segment_t(p0, p1, tb.b64[i]);
  const double t = f.t;
  double s = 0;
  for_lane_elements(xr, c0, c1, D, tb.vec4, lane, [&](double xk, double ak, double bk) { s += squared_gap(xk, ak, bk, t); });
  f.dist = warp_sum(s);
  return f;
}

template <typename T>
__device__ ExactFit warp_fit_vertex(const T* __restrict__ xr, const T* __restrict__ cb, const SearchTables& tb, int j,
                                    int lane) {
  const T* c = cb + int64_t(j) * tb.D;
  double s = 0;
  for_lane_elements(xr, c, c, tb.D, tb.vec4, lane, [&](double xk, double ck, double) { s += squared_gap(xk, ck, ck, 0.0); });
  ExactFit f;
  f.item = j;
  f.dist = warp_sum(s);
  return f;
}

template <typename T, bool kSegments>
__device__ __forceinline__ ExactFit warp_fit(const T* xr, const T* cb, const SearchTables& tb, int item, int lane) {
  if constexpr (kSegments) return warp_fit_segment(xr, cb, tb, item, lane);
  else return warp_fit_vertex(xr, cb, tb, item, lane);
}

// Writes row r's answer from the exactly nearest item (segment for exact
// projection, vertex otherwise). Whole warp.
template <typename T>
__device__ void warp_write(const T* __restrict__ xr, const T* __restrict__ cb, const SearchTables& tb, SearchMode mode,
                           const ExactFit& best, int64_t r, const SearchOutputs& out, int lane) {
  using O = out_type<T>;
  const int64_t D = tb.D;
  if (mode == SearchMode::kNearest) {
    if (lane == 0) {
      out.index[r] = best.item;
      static_cast<O*>(out.dist)[r] = static_cast<O>(best.dist);
    }
    return;
  }
  ExactFit fit = best;
  if (mode == SearchMode::kProjectVertex) {
    // The original authors' rule: nearest vertex j moved into [1, K-2], then
    // the better of segments j-1 and j (the lower one when equally good).
    if (tb.K == 2) {
      fit = warp_fit_segment(xr, cb, tb, 0, lane);
    } else {
      const int j = min(max(best.item, 1), static_cast<int>(tb.K) - 2);
      const ExactFit before_j = warp_fit_segment(xr, cb, tb, j - 1, lane);
      const ExactFit after_j = warp_fit_segment(xr, cb, tb, j, lane);
      fit = after_j.dist < before_j.dist ? after_j : before_j;
    }
  }
  if (lane == 0) {
    out.index[r] = fit.item;
    static_cast<O*>(out.t)[r] = static_cast<O>(fit.t);
    static_cast<O*>(out.coord)[r] = static_cast<O>(static_cast<double>(fit.item) + fit.t);
    static_cast<O*>(out.dist)[r] = static_cast<O>(fit.dist);
  }
  const T* __restrict__ c0 = cb + int64_t(fit.item) * D;
  const T* __restrict__ c1 = c0 + D;
  T* __restrict__ point = static_cast<T*>(out.point) + r * D;
  if constexpr (std::is_same_v<T, float>) {
    if (tb.vec4) {
      const float4* a4 = reinterpret_cast<const float4*>(c0);
      const float4* b4 = reinterpret_cast<const float4*>(c1);
      float4* p4 = reinterpret_cast<float4*>(point);
      const double t = fit.t;
#pragma unroll 4
      for (int64_t k = lane; k < D / 4; k += 32) {
        const float4 a = a4[k], b = b4[k];
        p4[k] = make_float4(static_cast<float>(lerp(double(a.x), double(b.x), t)),
                            static_cast<float>(lerp(double(a.y), double(b.y), t)),
                            static_cast<float>(lerp(double(a.z), double(b.z), t)),
                            static_cast<float>(lerp(double(a.w), double(b.w), t)));
      }
      return;
    }
  }
#pragma unroll 8
  for (int64_t k = lane; k < D; k += 32) point[k] = from_double<T>(lerp(to_double(c0[k]), to_double(c1[k]), fit.t));
}

__device__ __forceinline__ void report_bad_row(const SearchOutputs& out, int64_t r) {
  atomicMin(reinterpret_cast<unsigned long long*>(out.status), static_cast<unsigned long long>(r));
}

__device__ __forceinline__ void push_fallback(const SearchOutputs& out, int64_t r) {
  const unsigned long long pos = atomicAdd(reinterpret_cast<unsigned long long*>(out.status + 1), 1ull);
  out.fallback_rows[pos] = r;
}

// Certifies and finishes one row (whole warp). s/ci: the row's kList best
// (score, item) pairs in score order, from TF32 products; xn2 = ||x~||^2 and
// err2 = ||x~ - (x - m)||^2 of its rounded centred input; unsure: a score was NaN.
// Candidates are fitted exactly in score order while their lower bound does not
// exceed the best exact distance; the row is written if the (kList)-th score's
// bound rules out every item outside the list, otherwise it goes to brute force.
template <typename T, bool kSegments>
__device__ void finish_row(const T* __restrict__ xr, const T* __restrict__ cb, const SearchTables& tb, SearchMode mode,
                           int64_t row, float xn2, float err2, const float* s, const int* ci, bool unsure,
                           const SearchOutputs& out, int lane) {
  if (!isfinite(xn2)) {  // NaN or Inf in the input row
    if (lane == 0) report_bad_row(out, row);
    return;
  }
  const int items = static_cast<int>(kSegments ? tb.K - 1 : tb.K);
  if (tb.force_fallback || unsure || ci[0] == INT32_MAX || !isfinite(s[0])) {
    if (lane == 0) push_fallback(out, row);
    return;
  }
  const double cn = static_cast<double>(tb.norm_max);
  const double xn = sqrt(static_cast<double>(xn2));
  const double E = score_error_bound(xn, cn, tb.D);
  const double delta =
      sqrt(static_cast<double>(err2)) * (1.0 + 1e-6) + xn * (1.0 / 8388608.0) + static_cast<double>(tb.delta_c);
  const double rel = 1e-9;  // float64 rounding of the exact distances
  auto lower_bound = [&](float score) {
    const double l = static_cast<double>(score) + static_cast<double>(xn2) - E;
    if (l <= 0) return 0.0;
    const double root = sqrt(l) * (1.0 - rel) - delta;
    return root <= 0 ? 0.0 : root * root;
  };
  ExactFit best = warp_fit<T, kSegments>(xr, cb, tb, ci[0], lane);
#pragma unroll 1
  for (int q = 1; q < kKeep && q < items; ++q) {
    if (lower_bound(s[q]) > best.dist * (1.0 + rel)) break;
    const ExactFit f = warp_fit<T, kSegments>(xr, cb, tb, ci[q], lane);
    if (better(f, best)) best = f;
  }
  if (items > kKeep && !(lower_bound(s[kKeep]) > best.dist * (1.0 + rel))) {
    if (lane == 0) push_fallback(out, row);
    return;
  }
  warp_write(xr, cb, tb, mode, best, row, out, lane);
}

// ---------------------------------------------------------------------------
// The fused kernel. T: input dtype. kAsyncA (= tb.vec4): float32 rows 16-byte
// aligned, so x tiles stream in by cp.async; otherwise each thread loads,
// converts and centres its elements itself.

template <typename T, bool kAsyncA, bool kSegments>
__global__ void __launch_bounds__(kThreads, 1)
    search_kernel(const T* __restrict__ x, const T* __restrict__ cb, int64_t N, SearchTables tb, SearchMode mode,
                  SearchOutputs out) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  extern __shared__ float4 smem4[];
  float* As = reinterpret_cast<float*>(smem4);     // kStages x BM x kLd
  float* Bs = As + kStages * BM * kLd;              // kStages x BN x kLd
  float* Gs = Bs + kStages * BN * kLd;              // BM x kGLd
  float* carry = Gs + BM * kGLd;                    // BM: last column of the previous tile
  float* row_norm2 = carry + BM;                    // BM: ||x~||^2
  float* row_err2 = row_norm2 + BM;                 // BM: ||x~ - (x - m)||^2
  float* cand_s = row_err2 + BM;                    // BM x kList
  int* cand_i = reinterpret_cast<int*>(cand_s + BM * kList);  // BM x kList
  int* row_unsure = cand_i + BM * kList;            // BM: a score was NaN

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t4 = lane & 3;           // mma fragment coordinates
  const int wm = warp >> 2, wn = warp & 3;          // warp tile: rows wm*64.., columns wn*32..
  const int64_t row0 = int64_t(blockIdx.x) * BM;
  const int64_t K = tb.K, D = tb.D, Dp = tb.Dp;
  const int items = static_cast<int>(kSegments ? K - 1 : K);
  const int KT = static_cast<int>((Dp + BK - 1) / BK);
  const int NT = static_cast<int>((K + BN - 1) / BN);
  const int64_t total = int64_t(NT) * KT;

  // This thread's 16-byte chunks of an A or B tile: rows ld_row + 32 q, columns ld_col .. +3.
  const int ld_row = tid >> 3, ld_col = (tid & 7) * 4;

  float acc[4][4][4];
#pragma unroll
  for (int a = 0; a < 4; ++a)
#pragma unroll
    for (int b = 0; b < 4; ++b)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[a][b][c] = 0.f;
  float norm_acc[4] = {0.f, 0.f, 0.f, 0.f}, err_acc[4] = {0.f, 0.f, 0.f, 0.f};

  // Candidate list of (row = tid / 2, every other item of each tile = tid % 2).
  float ts[kList];
  int ti[kList];
#pragma unroll
  for (int q = 0; q < kList; ++q) ts[q] = INFINITY, ti[q] = INT32_MAX;
  bool nan_score = false;

  // Centre (x - m), round to TF32, and accumulate ||x~||^2 and the rounding error.
  auto centre = [&](auto value, auto m, int q, bool first_tile) -> float {
    using V = decltype(value);
    const V v = value - m;
    const float r = round_tf32(static_cast<float>(v));
    if (first_tile) {
      const float e = static_cast<float>(static_cast<V>(r) - v);
      norm_acc[q] = fmaf(r, r, norm_acc[q]);
      err_acc[q] = fmaf(e, e, err_acc[q]);
    }
    return r;
  };

  // Loads are issued kStages - 1 iterations ahead; (nt, kt, stage) of the next one to issue.
  int64_t issued = 0;
  int issue_nt = 0, issue_kt = 0, issue_stage = 0;
  auto issue = [&]() {
    if (issued < total) {
      const int nt = issue_nt, kt = issue_kt, stage = issue_stage;
      const int64_t k0 = int64_t(kt) * BK + ld_col;
      float* a_tile = As + stage * BM * kLd;
      float* b_tile = Bs + stage * BN * kLd;
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int r = ld_row + 32 * q;
        const int64_t row = row0 + r;
        float* dst = a_tile + r * kLd + ld_col;
        if constexpr (kAsyncA) {
          const bool ok = row < N && k0 < D;
          cp_async16(dst, ok ? static_cast<const void*>(x + row * D + k0) : static_cast<const void*>(x), ok);
        } else {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int64_t k = k0 + e;
            float v = 0.f;
            if (k < D) {
              if constexpr (std::is_same_v<T, double>) {
                v = centre(row < N ? x[row * D + k] : 0.0, __ldg(tb.mean64 + k), q, nt == 0 && row < N);
              } else {
                v = centre(row < N ? static_cast<float>(x[row * D + k]) : 0.f, __ldg(tb.mean + k), q, nt == 0 && row < N);
              }
            }
            dst[e] = v;
          }
        }
        const int64_t col = int64_t(nt) * BN + r;
        const bool okb = col < K && k0 < Dp;
        cp_async16(b_tile + r * kLd + ld_col, okb ? static_cast<const void*>(tb.centered + col * Dp + k0)
                                                  : static_cast<const void*>(tb.centered),
                   okb);
      }
      ++issued;
      if (++issue_kt == KT) issue_kt = 0, ++issue_nt;
      if (++issue_stage == kStages) issue_stage = 0;
    }
    cp_async_commit();
  };

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) issue();

  int nt = 0, kt = 0, stage = 0;
  for (int64_t it = 0; it < total; ++it) {
    cp_async_wait<kStages - 2>();
    if constexpr (kAsyncA) {
      // Centre and round the chunks this thread copied (visible to it after the wait).
      float* a_tile = As + stage * BM * kLd;
      const int64_t k0 = int64_t(kt) * BK + ld_col;
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int r = ld_row + 32 * q;
        float4* p = reinterpret_cast<float4*>(a_tile + r * kLd + ld_col);
        float4 v = *p;
        if (k0 < D) {
          const bool first = nt == 0 && row0 + r < N;
          const float4 m = __ldg(reinterpret_cast<const float4*>(tb.mean + k0));
          v.x = centre(v.x, m.x, q, first);
          v.y = centre(v.y, m.y, q, first);
          v.z = centre(v.z, m.z, q, first);
          v.w = centre(v.w, m.w, q, first);
        }
        *p = v;
      }
    }
    __syncthreads();
    issue();

    // Tensor-core tile product. The k order inside a BK chunk is permuted
    // (identically for A and B, so the dot products are unchanged) so that
    // each thread's fragments for all four k-steps are 8 consecutive floats.
    {
      const float* a_tile = As + stage * BM * kLd;
      const float* b_tile = Bs + stage * BN * kLd;
      float bv[4][8];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float* p = b_tile + (wn * 32 + j * 8 + g) * kLd + 8 * t4;
        const float4 lo = *reinterpret_cast<const float4*>(p), hi = *reinterpret_cast<const float4*>(p + 4);
        bv[j][0] = lo.x, bv[j][1] = lo.y, bv[j][2] = lo.z, bv[j][3] = lo.w;
        bv[j][4] = hi.x, bv[j][5] = hi.y, bv[j][6] = hi.z, bv[j][7] = hi.w;
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float* p0 = a_tile + (wm * 64 + i * 16 + g) * kLd + 8 * t4;
        const float* p1 = p0 + 8 * kLd;
        float av0[8], av1[8];
        {
          const float4 lo0 = *reinterpret_cast<const float4*>(p0), hi0 = *reinterpret_cast<const float4*>(p0 + 4);
          const float4 lo1 = *reinterpret_cast<const float4*>(p1), hi1 = *reinterpret_cast<const float4*>(p1 + 4);
          av0[0] = lo0.x, av0[1] = lo0.y, av0[2] = lo0.z, av0[3] = lo0.w;
          av0[4] = hi0.x, av0[5] = hi0.y, av0[6] = hi0.z, av0[7] = hi0.w;
          av1[0] = lo1.x, av1[1] = lo1.y, av1[2] = lo1.z, av1[3] = lo1.w;
          av1[4] = hi1.x, av1[5] = hi1.y, av1[6] = hi1.z, av1[7] = hi1.w;
        }
#pragma unroll
        for (int ks = 0; ks < 4; ++ks)
#pragma unroll
          for (int j = 0; j < 4; ++j)
            mma_tf32(acc[i][j], av0[2 * ks], av1[2 * ks], av0[2 * ks + 1], av1[2 * ks + 1], bv[j][2 * ks],
                     bv[j][2 * ks + 1]);
      }
    }

    if (kt == KT - 1) {
      // Epilogue of column tile nt: accumulators -> shared G tile.
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int r = wm * 64 + i * 16 + g, c = wn * 32 + j * 8 + 2 * t4;
          *reinterpret_cast<float2*>(Gs + r * kGLd + c) = make_float2(acc[i][j][0], acc[i][j][1]);
          *reinterpret_cast<float2*>(Gs + (r + 8) * kGLd + c) = make_float2(acc[i][j][2], acc[i][j][3]);
          acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.f;
        }
      __syncthreads();
      const int r = tid >> 1, h = tid & 1;
      const float* grow = Gs + r * kGLd;
      const int n0 = nt * BN;
      if constexpr (kSegments) {
        // Local step s in [0, BN) scores segment n0 - 1 + s from columns s - 1 and s.
        for (int s = h; s < BN; s += 2) {
          const int i = n0 - 1 + s;
          if (i < 0) continue;
          if (i >= items) break;
          const float gi = s == 0 ? carry[r] : grow[s - 1];
          const float score =
              segment_score(gi, grow[s], __ldg(tb.a + i), __ldg(tb.n + i), __ldg(tb.b + i), __ldg(tb.inv_b + i));
          nan_score |= score != score;
          insert(ts, ti, score, i);
        }
      } else {
        for (int s = h; s < BN; s += 2) {
          const int j = n0 + s;
          if (j >= items) break;
          const float score = fmaf(-2.f, grow[s], __ldg(tb.n + j));
          nan_score |= score != score;
          insert(ts, ti, score, j);
        }
      }
      __syncthreads();
      if (kSegments && tid < BM) carry[tid] = Gs[tid * kGLd + BN - 1];
    }
    if (++kt == KT) kt = 0, ++nt;
    if (++stage == kStages) stage = 0;
  }
  cp_async_wait<0>();

  // Row norms: the 8 threads that loaded a row's chunks are consecutive lanes.
#pragma unroll
  for (int q = 0; q < 4; ++q) {
#pragma unroll
    for (int o = 1; o < 8; o <<= 1) {
      norm_acc[q] += __shfl_xor_sync(0xffffffffu, norm_acc[q], o);
      err_acc[q] += __shfl_xor_sync(0xffffffffu, err_acc[q], o);
    }
    if ((tid & 7) == 0) {
      row_norm2[ld_row + 32 * q] = norm_acc[q];
      row_err2[ld_row + 32 * q] = err_acc[q];
    }
  }
  // Merge the two half-lists of each row (partner lane = lane ^ 1).
  {
    float ps[kList];
    int pi[kList];
#pragma unroll
    for (int q = 0; q < kList; ++q) {
      ps[q] = __shfl_xor_sync(0xffffffffu, ts[q], 1);
      pi[q] = __shfl_xor_sync(0xffffffffu, ti[q], 1);
    }
    const bool partner_nan = __shfl_xor_sync(0xffffffffu, static_cast<int>(nan_score), 1) != 0;
#pragma unroll
    for (int q = 0; q < kList; ++q)
      if (pi[q] != INT32_MAX) insert(ts, ti, ps[q], pi[q]);
    if ((tid & 1) == 0) {
      const int r = tid >> 1;
#pragma unroll
      for (int q = 0; q < kList; ++q) cand_s[r * kList + q] = ts[q], cand_i[r * kList + q] = ti[q];
      row_unsure[r] = (nan_score || partner_nan) ? 1 : 0;
    }
  }
  __syncthreads();

  // Exact finish: one warp per row.
  for (int r = warp; r < BM; r += kThreads / 32) {
    const int64_t row = row0 + r;
    if (row >= N) break;
    finish_row<T, kSegments>(x + row * D, cb, tb, mode, row, row_norm2[r], row_err2[r], cand_s + r * kList,
                             cand_i + r * kList, row_unsure[r] != 0, out, lane);
  }
#else
  __trap();  // built for an architecture without TF32 tensor cores (checked on the host)
#endif
}

// Brute force for the listed rows: one block per row, one warp per item at a time.
template <typename T, bool kSegments>
__global__ void __launch_bounds__(kFallbackThreads)
    fallback_kernel(const T* __restrict__ x, const T* __restrict__ cb, SearchTables tb, SearchMode mode,
                    SearchOutputs out) {
  __shared__ double best_dist[kFallbackThreads / 32];
  __shared__ int best_item[kFallbackThreads / 32];
  __shared__ double best_t[kFallbackThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  constexpr int kWarps = kFallbackThreads / 32;
  const int64_t row = out.fallback_rows[blockIdx.x];
  const T* xr = x + row * tb.D;
  const int items = static_cast<int>(kSegments ? tb.K - 1 : tb.K);
  ExactFit best;
  for (int i = warp; i < items; i += kWarps) {  // ascending per warp
    const ExactFit f = warp_fit<T, kSegments>(xr, cb, tb, i, lane);
    if (better(f, best)) best = f;
  }
  if (lane == 0) best_dist[warp] = best.dist, best_item[warp] = best.item, best_t[warp] = best.t;
  __syncthreads();
  if (warp != 0) return;
  ExactFit total;
  for (int w = 0; w < kWarps; ++w) {
    ExactFit f;
    f.item = best_item[w], f.dist = best_dist[w], f.t = best_t[w];
    if (f.item >= 0 && better(f, total)) total = f;
  }
  if (total.item < 0) {  // every distance NaN: a non-finite input row
    if (lane == 0) report_bad_row(out, row);
    return;
  }
  warp_write(xr, cb, tb, mode, total, row, out, lane);
}

// ---------------------------------------------------------------------------
// Small codebooks: K <= 32 vectors, float32 rows 16-byte aligned, D <= 512.
//
// At small K the fused kernel is mostly padding (BN = 128 columns for 16 used)
// and its block-wide phases, one 180 KB block per SM, leave nothing to overlap
// the memory traffic. Here the block keeps the TF32-rounded centred codebook
// in shared memory for its whole life (a persistent grid) and each warp owns
// one row at a time, with no block barrier after the start: the row is loaded
// into registers (the next row's loads are issued before this one is scored),
// its K dot products are summed across the warp, lane j scores item j, the
// kList best items are picked by warp-wide minimum, and the row is finished by
// the same certified float64 finish as the fused kernel. The scores are formed
// the same way (TF32 operands, float32 sums, in another order), so the same
// error bound certifies them, and the exact finish makes the answers agree.

constexpr int kSmallThreads = 256;
constexpr int kSmallWarps = kSmallThreads / 32;

// Sums v over the warp, leaving lane l with the total of v[l % kK] (kK a power
// of two <= 32). A reduce-scatter: kK - 1 shuffles where kK all-reduces take 5 kK.
// Before the round with mask m, v[q] (q < kK / m) holds a partial sum of item
// q m + (lane % m); the round keeps the items whose bit m matches the lane's,
// adds the partner's (lane ^ m) partial sums of them, and sends it the others.
template <int kK>
__device__ __forceinline__ float reduce_scatter(float (&v)[kK], int lane) {
  // A linear round counter, so nvcc unrolls both loops and v stays in registers.
#pragma unroll
  for (int level = 0; (1 << level) < kK; ++level) {
    const int m = 1 << level;
    const bool upper = (lane & m) != 0;
#pragma unroll
    for (int q = 0; q < kK / (2 * m); ++q) {
      const float keep = upper ? v[2 * q + 1] : v[2 * q];
      const float send = upper ? v[2 * q] : v[2 * q + 1];
      v[q] = keep + __shfl_xor_sync(0xffffffffu, send, m);
    }
  }
  float total = v[0];
#pragma unroll
  for (int m = kK; m < 32; m <<= 1) total += __shfl_xor_sync(0xffffffffu, total, m);
  return total;
}

// Unsigned key with the order of the float score (NaN excluded by the caller).
__device__ __forceinline__ unsigned order_key(float s) {
  const unsigned b = __float_as_uint(s);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// kK: K rounded up to 16 or 32 (the dot products held per lane).
// kVec: float4s of a row per lane (D <= 128 kVec).
template <int kK, int kVec, bool kSegments>
__global__ void __launch_bounds__(kSmallThreads, 2)
    small_k_kernel(const float* __restrict__ x, const float* __restrict__ cb, int64_t N, SearchTables tb,
                   SearchMode mode, SearchOutputs out) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  extern __shared__ float4 small_smem[];
  float4* cs = small_smem;  // K x D4: row j, float4 v at j * D4 + v
  const int64_t D = tb.D, D4 = D / 4;
  const int K = static_cast<int>(tb.K);
  const int items = kSegments ? K - 1 : K;
  const float4* centered4 = reinterpret_cast<const float4*>(tb.centered);  // row stride Dp = D here
  for (int64_t e = threadIdx.x; e < int64_t(K) * D4; e += kSmallThreads) cs[e] = centered4[e];
  __syncthreads();

  const int lane = threadIdx.x & 31;
  // Lane j scores item j; its table entries stay in registers for every row.
  const bool scorer = lane < items;
  const int j = scorer ? lane : 0;
  const float n_j = __ldg(tb.n + j);
  float a_j = 0.f, b_j = 0.f, inv_b_j = 0.f;
  if constexpr (kSegments) a_j = __ldg(tb.a + j), b_j = __ldg(tb.b + j), inv_b_j = __ldg(tb.inv_b + j);
  const float4* m4 = reinterpret_cast<const float4*>(tb.mean);
  const float4* x4 = reinterpret_cast<const float4*>(x);

  const int64_t stride = int64_t(gridDim.x) * kSmallWarps;
  int64_t row = int64_t(blockIdx.x) * kSmallWarps + (threadIdx.x >> 5);
  float4 next[kVec];
  auto load = [&](int64_t r) {
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      const int64_t v = lane + 32 * i;
      if (r < N && v < D4) next[i] = x4[r * D4 + v];
    }
  };
  load(row);
  for (; row < N; row += stride) {
    float4 cur[kVec];
#pragma unroll
    for (int i = 0; i < kVec; ++i) cur[i] = next[i];
    load(row + stride);  // in flight while this row is scored and finished

    // Centre on the codebook mean, round to TF32 (as the fused kernel does),
    // and accumulate ||x~||^2, the rounding error and the K dot products.
    float dots[kK];
#pragma unroll
    for (int q = 0; q < kK; ++q) dots[q] = 0.f;
    float norm2 = 0.f, err2 = 0.f;
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      const int64_t v = lane + 32 * i;
      if (v >= D4) break;
      const float4 m = __ldg(m4 + v);
      const float xv[4] = {cur[i].x - m.x, cur[i].y - m.y, cur[i].z - m.z, cur[i].w - m.w};
      float r[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        r[e] = round_tf32(xv[e]);
        const float d = r[e] - xv[e];
        norm2 = fmaf(r[e], r[e], norm2);
        err2 = fmaf(d, d, err2);
      }
#pragma unroll
      for (int q = 0; q < kK; ++q) {
        if (q >= K) break;  // dots past K stay zero
        const float4 c = cs[q * D4 + v];
        dots[q] = fmaf(r[0], c.x, fmaf(r[1], c.y, fmaf(r[2], c.z, fmaf(r[3], c.w, dots[q]))));
      }
    }
    const float g = reduce_scatter<kK>(dots, lane);  // <x~, c~_lane> for lane < kK
    norm2 = warp_sum(norm2);
    err2 = warp_sum(err2);

    float score = INFINITY;
    if constexpr (kSegments) {
      const float g_next = __shfl_down_sync(0xffffffffu, g, 1);  // lane + 1 holds item lane + 1
      score = segment_score(g, g_next, a_j, n_j, b_j, inv_b_j);
    } else {
      score = fmaf(-2.f, g, n_j);
    }
    const bool nan_score = __any_sync(0xffffffffu, scorer && score != score);

    // The kList best (score, item) pairs, smaller item first among equal scores.
    unsigned key = scorer && score == score ? order_key(score) : 0xffffffffu;
    float s[kList];
    int ci[kList];
#pragma unroll
    for (int q = 0; q < kList; ++q) {
      const unsigned least = __reduce_min_sync(0xffffffffu, key);
      const int winner = __ffs(static_cast<int>(__ballot_sync(0xffffffffu, key == least))) - 1;
      const float ws = __shfl_sync(0xffffffffu, score, winner);
      const bool found = least != 0xffffffffu;
      s[q] = found ? ws : INFINITY;
      ci[q] = found ? winner : INT32_MAX;
      if (found && lane == winner) key = 0xffffffffu;
    }
    finish_row<float, kSegments>(x + row * D, cb, tb, mode, row, norm2, err2, s, ci, nan_score, out, lane);
  }
#else
  __trap();  // built for an architecture without TF32 (checked on the host)
#endif
}

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("sfvq: CUDA error in ") + what + ": " + cudaGetErrorString(e));
}

template <typename T, bool kAsyncA, bool kSegments>
void launch_fused(const void* x, const void* cb, int64_t N, const SearchTables& tb, SearchMode mode,
                  const SearchOutputs& out, cudaStream_t stream) {
  auto kernel = &search_kernel<T, kAsyncA, kSegments>;
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSmemBytes)),
        "cudaFuncSetAttribute");
  const int64_t blocks = (N + BM - 1) / BM;
  kernel<<<static_cast<unsigned>(blocks), kThreads, kSmemBytes, stream>>>(static_cast<const T*>(x),
                                                                          static_cast<const T*>(cb), N, tb, mode, out);
  check(cudaGetLastError(), "search_kernel launch");
}

template <int kK, int kVec, bool kSegments>
void launch_small_k(const void* x, const void* cb, int64_t N, const SearchTables& tb, SearchMode mode,
                    const SearchOutputs& out, cudaStream_t stream) {
  auto kernel = &small_k_kernel<kK, kVec, kSegments>;
  const size_t smem = static_cast<size_t>(small_k_smem_bytes(tb.K, tb.D));
  // The instance's largest need (D = kSmallKMaxD), so concurrent calls with other D never lower it.
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(small_k_smem_bytes(kK, kSmallKMaxD))),
        "cudaFuncSetAttribute");
  int device = 0, sms = 0, per_sm = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
  check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kSmallThreads, smem),
        "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
  // Persistent grid: every block copies the codebook once, then its warps stride over the rows.
  const int64_t wanted = (N + kSmallWarps - 1) / kSmallWarps;
  const int64_t blocks = std::min<int64_t>(wanted, int64_t(sms) * std::max(per_sm, 1));
  kernel<<<static_cast<unsigned>(blocks), kSmallThreads, smem, stream>>>(
      static_cast<const float*>(x), static_cast<const float*>(cb), N, tb, mode, out);
  check(cudaGetLastError(), "small_k_kernel launch");
}

template <bool kSegments>
void launch_small_k_sized(const void* x, const void* cb, int64_t N, const SearchTables& tb, SearchMode mode,
                          const SearchOutputs& out, cudaStream_t stream) {
  const int64_t vecs = (tb.D / 4 + 31) / 32;  // float4s per lane
  const auto with_vec = [&](auto kk) {
    constexpr int kK = decltype(kk)::value;
    if (vecs <= 1) launch_small_k<kK, 1, kSegments>(x, cb, N, tb, mode, out, stream);
    else if (vecs <= 2) launch_small_k<kK, 2, kSegments>(x, cb, N, tb, mode, out, stream);
    else launch_small_k<kK, 4, kSegments>(x, cb, N, tb, mode, out, stream);  // D <= kSmallKMaxD = 512
  };
  if (tb.K <= 16) with_vec(std::integral_constant<int, 16>{});
  else with_vec(std::integral_constant<int, 32>{});
}

template <typename T>
void launch_typed(const void* x, const void* cb, int64_t N, const SearchTables& tb, SearchMode mode,
                  const SearchOutputs& out, cudaStream_t stream) {
  const bool segments = mode == SearchMode::kProjectExact;
  if constexpr (std::is_same_v<T, float>) {
    if (tb.small_k) {
      if (segments) launch_small_k_sized<true>(x, cb, N, tb, mode, out, stream);
      else launch_small_k_sized<false>(x, cb, N, tb, mode, out, stream);
      return;
    }
    if (tb.vec4) {
      if (segments) launch_fused<T, true, true>(x, cb, N, tb, mode, out, stream);
      else launch_fused<T, true, false>(x, cb, N, tb, mode, out, stream);
      return;
    }
  }
  if (segments) launch_fused<T, false, true>(x, cb, N, tb, mode, out, stream);
  else launch_fused<T, false, false>(x, cb, N, tb, mode, out, stream);
}

template <typename T>
void fallback_typed(const void* x, const void* cb, int64_t count, const SearchTables& tb, SearchMode mode,
                    const SearchOutputs& out, cudaStream_t stream) {
  // One block per listed row; grids are limited to 2^31 - 1 blocks.
  const bool segments = mode == SearchMode::kProjectExact;
  auto kernel = segments ? &fallback_kernel<T, true> : &fallback_kernel<T, false>;
  kernel<<<static_cast<unsigned>(count), kFallbackThreads, 0, stream>>>(static_cast<const T*>(x),
                                                                        static_cast<const T*>(cb), tb, mode, out);
  check(cudaGetLastError(), "fallback_kernel launch");
}

__global__ void round_to_tf32_kernel(uint32_t* __restrict__ bits, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    bits[i] = (bits[i] + 0x1000u) & 0xFFFFE000u;
}

// Calls f(T{}) with T the C++ type of the input dtype.
template <typename F>
void with_input_type(InputType type, F&& f) {
  switch (type) {
    case InputType::kFloat: return f(float{});
    case InputType::kDouble: return f(double{});
    case InputType::kHalf: return f(c10::Half{});
    case InputType::kBFloat16: return f(c10::BFloat16{});
  }
}

}  // namespace

void launch_search(InputType type, const void* x, const void* codebook, int64_t N, const SearchTables& tables,
                   SearchMode mode, const SearchOutputs& out, cudaStream_t stream) {
  with_input_type(type, [&](auto tag) {
    launch_typed<decltype(tag)>(x, codebook, N, tables, mode, out, stream);
  });
}

void launch_round_to_tf32(float* data, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  const int64_t blocks = std::min<int64_t>((n + 255) / 256, int64_t{1} << 20);
  round_to_tf32_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(reinterpret_cast<uint32_t*>(data), n);
  check(cudaGetLastError(), "round_to_tf32_kernel launch");
}

void launch_fallback(InputType type, const void* x, const void* codebook, int64_t count, const SearchTables& tables,
                     SearchMode mode, const SearchOutputs& out, cudaStream_t stream) {
  if (count <= 0) return;
  with_input_type(type, [&](auto tag) {
    fallback_typed<decltype(tag)>(x, codebook, count, tables, mode, out, stream);
  });
}

}  // namespace sfvq::cuda
