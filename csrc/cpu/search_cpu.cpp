// CPU nearest-segment projection and nearest-point search.
//
// Both are "one GEMM plus an epilogue" (DESIGN.md section 1): for a block of
// rows, G = X_c C_c^T (inputs and codebook centred on the codebook mean), then
// a per-row epilogue scores every segment (or vertex) from adjacent columns of
// G, keeps the best few candidates, and re-ranks those exactly in float64 from
// the original values. The expanded scores only choose candidates; every
// returned number comes from the direct formula. Rows are processed in blocks,
// in parallel, so no N x K buffer ever exists.
//
// Torch through its stable ABI (sfvq/stable.h): the row blocks run in
// torch::stable::parallel_for (torch's own thread pool), and each block's GEMM
// is torch's aten::mm.out, reached through the stable dispatcher call (the
// stable API at 2.10 wraps no GEMM).

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "sfvq/kernels.h"
#include "sfvq/segment.h"

// Hot loops are compiled twice, for AVX2+FMA and for the baseline, and the
// right one is picked at load time from what the CPU supports.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SFVQ_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define SFVQ_SIMD_CLONES
#endif
#define SFVQ_INLINE inline __attribute__((always_inline))

namespace sfvq::cpu {
namespace {

// The expanded scores (rounded) only nominate candidates: every index whose
// score is within the rounding error bound of the row's best score may be the
// true best, and all of them are re-ranked exactly. Usually that is one or two;
// on degenerate curves (overlapping segments) it can be many, and exactness wins.
constexpr int64_t kScanChunk = 32;

// ---------------------------------------------------------------------------
// Vectorised loops (float and double overloads of one template body each).

template <typename T>
SFVQ_INLINE void segment_scores_impl(const T* __restrict g, const T* __restrict a, const T* __restrict n,
                                     const T* __restrict b, const T* __restrict inv_b, int64_t segments,
                                     T* __restrict out) {
#pragma omp simd
  for (int64_t i = 0; i < segments; ++i) out[i] = segment_score(g[i], g[i + 1], a[i], n[i], b[i], inv_b[i]);
}
SFVQ_SIMD_CLONES void segment_scores(const float* g, const float* a, const float* n, const float* b,
                                     const float* inv_b, int64_t segments, float* out) {
  segment_scores_impl(g, a, n, b, inv_b, segments, out);
}
SFVQ_SIMD_CLONES void segment_scores(const double* g, const double* a, const double* n, const double* b,
                                     const double* inv_b, int64_t segments, double* out) {
  segment_scores_impl(g, a, n, b, inv_b, segments, out);
}

// ||x - c||^2 - ||x||^2 = n_j - 2 g_j for every vertex.
template <typename T>
SFVQ_INLINE void vertex_scores_impl(const T* __restrict g, const T* __restrict n, int64_t count, T* __restrict out) {
#pragma omp simd
  for (int64_t j = 0; j < count; ++j) out[j] = n[j] - T(2) * g[j];
}
SFVQ_SIMD_CLONES void vertex_scores(const float* g, const float* n, int64_t count, float* out) {
  vertex_scores_impl(g, n, count, out);
}
SFVQ_SIMD_CLONES void vertex_scores(const double* g, const double* n, int64_t count, double* out) {
  vertex_scores_impl(g, n, count, out);
}

// out = x * scale - mean (in the GEMM's precision; scale is a power of two).
// Returns ||out||^2 (Inf if it overflows), or NaN if the row holds NaN or Inf
// (x * 0 is 0 for finite x, NaN otherwise).
template <typename S, typename T>
SFVQ_INLINE T center_row_impl(const S* __restrict x, T scale, const T* __restrict mean, int64_t D, T* __restrict out) {
  T squared_norm = 0, poison = 0;
#pragma omp simd reduction(+ : squared_norm, poison)
  for (int64_t k = 0; k < D; ++k) {
    const T xk = static_cast<T>(x[k]);
    const T v = xk * scale - mean[k];
    out[k] = v;
    squared_norm += v * v;
    poison += xk * T(0);
  }
  return poison == T(0) ? squared_norm : std::numeric_limits<T>::quiet_NaN();
}
SFVQ_SIMD_CLONES float center_row(const float* x, float scale, const float* mean, int64_t D, float* out) {
  return center_row_impl(x, scale, mean, D, out);
}
SFVQ_SIMD_CLONES double center_row(const double* x, double scale, const double* mean, int64_t D, double* out) {
  return center_row_impl(x, scale, mean, D, out);
}
template <typename S, typename T>
T center_row(const S* x, T scale, const T* mean, int64_t D, T* out) {  // float16 / bfloat16
  return center_row_impl(x, scale, mean, D, out);
}

// Minimum of a short run of scores (lets the candidate scan skip whole chunks).
template <typename T>
SFVQ_INLINE T min_of_impl(const T* __restrict v, int64_t count) {
  T m = std::numeric_limits<T>::infinity();
#pragma omp simd reduction(min : m)
  for (int64_t i = 0; i < count; ++i) m = v[i] < m ? v[i] : m;
  return m;
}
SFVQ_SIMD_CLONES float min_of(const float* v, int64_t count) { return min_of_impl(v, count); }
SFVQ_SIMD_CLONES double min_of(const double* v, int64_t count) { return min_of_impl(v, count); }

// out = lerp(c0, c1, t) * unscale (a power of two), rounded to the output dtype.
template <typename S>
SFVQ_INLINE void write_point_impl(const double* __restrict c0, const double* __restrict c1, double t, double unscale,
                                  int64_t D, S* __restrict out) {
#pragma omp simd
  for (int64_t k = 0; k < D; ++k) out[k] = static_cast<S>(lerp(c0[k], c1[k], t) * unscale);
}
SFVQ_SIMD_CLONES void write_point(const double* c0, const double* c1, double t, double unscale, int64_t D,
                                  float* out) {
  write_point_impl(c0, c1, t, unscale, D, out);
}
SFVQ_SIMD_CLONES void write_point(const double* c0, const double* c1, double t, double unscale, int64_t D,
                                  double* out) {
  write_point_impl(c0, c1, t, unscale, D, out);
}
template <typename S>
void write_point(const double* c0, const double* c1, double t, double unscale, int64_t D, S* out) {  // f16 / bf16
  write_point_impl(c0, c1, t, unscale, D, out);
}

// t of x * xs (xs: a power of two) on segment c0 -> c1 of squared length b, in
// float64, from p0 = <x xs - c0, d> and p1 = <c1 - x xs, d> (exact_segment_t).
template <typename X>
SFVQ_INLINE double exact_t_impl(const X* __restrict x, double xs, const double* __restrict c0,
                                const double* __restrict c1, double b, int64_t D) {
  double p0 = 0, p1 = 0;
#pragma omp simd reduction(+ : p0, p1)
  for (int64_t k = 0; k < D; ++k) {
    const double xk = static_cast<double>(x[k]) * xs, dk = c1[k] - c0[k];
    p0 += (xk - c0[k]) * dk;
    p1 += (c1[k] - xk) * dk;
  }
  return exact_segment_t(p0, p1, b);
}
SFVQ_SIMD_CLONES double exact_t(const float* x, double xs, const double* c0, const double* c1, double b, int64_t D) {
  return exact_t_impl(x, xs, c0, c1, b, D);
}
SFVQ_SIMD_CLONES double exact_t(const double* x, double xs, const double* c0, const double* c1, double b, int64_t D) {
  return exact_t_impl(x, xs, c0, c1, b, D);
}

// ||x * xs - lerp(c0, c1, t)||^2 summed directly: every exact distance is this.
template <typename X>
SFVQ_INLINE double residual_impl(const X* __restrict x, double xs, const double* __restrict c0,
                                 const double* __restrict c1, double t, int64_t D) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t k = 0; k < D; ++k) s += squared_gap(static_cast<double>(x[k]) * xs, c0[k], c1[k], t);
  return s;
}
SFVQ_SIMD_CLONES double residual(const float* x, double xs, const double* c0, const double* c1, double t, int64_t D) {
  return residual_impl(x, xs, c0, c1, t, D);
}
SFVQ_SIMD_CLONES double residual(const double* x, double xs, const double* c0, const double* c1, double t, int64_t D) {
  return residual_impl(x, xs, c0, c1, t, D);
}

// ---------------------------------------------------------------------------

// Indices whose score is within `tolerance` of the row's minimum, ascending.
template <typename T>
void contenders(const T* scores, int64_t count, T tolerance, std::vector<int64_t>& out) {
  const T threshold = min_of(scores, count) + tolerance;
  out.clear();
  for (int64_t begin = 0; begin < count; begin += kScanChunk) {
    const int64_t end = std::min(count, begin + kScanChunk);
    if (min_of(scores + begin, end - begin) > threshold) continue;
    for (int64_t i = begin; i < end; ++i)
      if (scores[i] <= threshold) out.push_back(i);
  }
}

struct SegmentFit {
  int64_t segment = -1;
  double t = 0;
  double dist = std::numeric_limits<double>::infinity();  // in the units of the row's fitter
};

// A row (centred, scaled) whose squared norm exceeds this is "far": its GEMM
// scores could overflow and would nominate every item anyway (the tolerance
// grows with the norm), so each item is fitted exactly by FarRowFitter instead.
constexpr double kFarSquaredNorm = 0x1p96;

// Codebook data for one call, on the codebook scaled by 2^scale_exp (a power of
// two chosen from its largest entry, so the search never overflows or
// underflows): the centred copy and per-vertex/segment terms in the GEMM's
// precision (to choose candidates), and the scaled values in float64 (to answer).
template <typename acc_t>
struct CodebookTables {
  int64_t K, D;
  int scale_exp;                     // inputs and codebook are multiplied by 2^scale_exp
  acc_t scale;                       // 2^scale_exp
  double scale64, unscale64;         // 2^scale_exp and 2^-scale_exp
  std::vector<acc_t> mean;           // (D,) mean of the scaled codebook
  Tensor centered;                   // (K, D) acc_t, GEMM operand
  std::vector<acc_t> a, n, b, inv_b; // <c_i, d_i>, ||c_j||^2, ||d_i||^2, 1/||d_i||^2 (centred)
  std::vector<double> exact;         // (K, D) float64, the scaled codebook
  std::vector<double> b64;           // ||d_i||^2 of the scaled codebook, float64
  acc_t max_n = 0;                   // max_j ||c_j||^2 (centred)

  // codebook: (K, D) contiguous, of dtype scalar_t.
  template <typename scalar_t>
  CodebookTables(const Tensor& codebook, bool with_segments, scalar_t /*dtype tag*/)
      : K(codebook.size(0)), D(codebook.size(1)) {
    const scalar_t* source = codebook.const_data_ptr<scalar_t>();
    double max_abs = 0;
    for (int64_t i = 0; i < K * D; ++i) max_abs = std::max(max_abs, std::abs(static_cast<double>(source[i])));
    // 2^e must be a normal number of acc_t (float: |e| <= 126).
    constexpr int max_exp = std::numeric_limits<acc_t>::max_exponent - 2;
    scale_exp = scale_exponent(max_abs, max_exp);
    scale64 = std::ldexp(1.0, scale_exp);
    unscale64 = std::ldexp(1.0, -scale_exp);
    scale = static_cast<acc_t>(scale64);
    exact.resize(K * D);  // exact: a power-of-two scaling of float64 values
    for (int64_t i = 0; i < K * D; ++i) exact[i] = static_cast<double>(source[i]) * scale64;
    const double* c = exact.data();
    std::vector<double> m(D, 0.0);
    for (int64_t j = 0; j < K; ++j)
      for (int64_t k = 0; k < D; ++k) m[k] += c[j * D + k];
    mean.resize(D);
    for (int64_t k = 0; k < D; ++k) mean[k] = static_cast<acc_t>(m[k] / static_cast<double>(K));

    centered = empty({K, D}, scalar_type_of<acc_t>(), codebook.device());
    acc_t* cc = centered.mutable_data_ptr<acc_t>();
    n.assign(K, 0);
    for (int64_t j = 0; j < K; ++j) {
      double nj = 0;
      for (int64_t k = 0; k < D; ++k) {
        cc[j * D + k] = static_cast<acc_t>(c[j * D + k]) - mean[k];
        nj += static_cast<double>(cc[j * D + k]) * cc[j * D + k];
      }
      n[j] = static_cast<acc_t>(nj);
      max_n = std::max(max_n, n[j]);
    }
    if (!with_segments) return;
    const int64_t S = K - 1;
    a.assign(S, 0), b.assign(S, 0), inv_b.assign(S, 0), b64.assign(S, 0);
    for (int64_t i = 0; i < S; ++i) {
      double ai = 0, bi = 0, bi64 = 0;
      for (int64_t k = 0; k < D; ++k) {
        const double ci = cc[i * D + k], di = static_cast<double>(cc[(i + 1) * D + k]) - ci;
        ai += ci * di;
        bi += di * di;
        const double d64 = c[(i + 1) * D + k] - c[i * D + k];
        bi64 += d64 * d64;
      }
      a[i] = static_cast<acc_t>(ai);
      b[i] = static_cast<acc_t>(bi);
      inv_b[i] = inverse_or_zero(b[i]);
      b64[i] = bi64;
    }
  }

  const double* vertex(int64_t j) const { return exact.data() + j * D; }

  // Bound on the difference between two rounded scores of a row whose centred
  // squared norm is xn (the width of the contender window). A GEMM entry g_j is
  // off by at most D u ||x|| ||c_j|| (u: unit round-off of acc_t); a score adds
  // at most 3 such errors plus a few round-offs of its terms, each below
  // xn + 4 max_n. Subnormal operands and products (which the GEMM may also flush
  // to zero) add an absolute error below 2^(smallest normal exponent + 52) per
  // product: the other operand is below 2^48 (a row nearer than kFarSquaredNorm)
  // or 2^3 (the scaled, centred codebook).
  // Candidates farther than this from the best score cannot be the true best.
  acc_t score_tolerance(acc_t xn) const {
    constexpr acc_t u = std::numeric_limits<acc_t>::epsilon() / 2;
    constexpr int min_exp = std::numeric_limits<acc_t>::min_exponent - 1;  // smallest normal: 2^min_exp
    const acc_t terms = acc_t(6) * static_cast<acc_t>(D) + acc_t(24);
    return terms * (u * (xn + acc_t(4) * max_n) + std::ldexp(acc_t(1), min_exp + 52));
  }
};

// Exact fits of one row x (as float or double) against the scaled codebook:
// the row is multiplied by 2^scale_exp on the fly. Distances are in scaled
// units (dist_exp turns them back).
template <typename acc_t, typename X>
struct RowFitter {
  const CodebookTables<acc_t>& tables;
  const X* x;

  int dist_exp() const { return -2 * tables.scale_exp; }

  SegmentFit segment(int64_t i) const {
    const double *c0 = tables.vertex(i), *c1 = tables.vertex(i + 1);
    SegmentFit f;
    f.segment = i;
    f.t = exact_t(x, tables.scale64, c0, c1, tables.b64[i], tables.D);
    f.dist = residual(x, tables.scale64, c0, c1, f.t, tables.D);
    return f;
  }
  double vertex(int64_t j) const {
    const double* c = tables.vertex(j);
    return residual(x, tables.scale64, c, c, 0.0, tables.D);
  }
};

// Exact fits of a far row (kFarSquaredNorm): the row and the codebook are both
// rescaled so that the row's largest entry is in [0.5, 1), where no square
// overflows (float64 inputs can be 2^1000 times the codebook), and the same
// squared_gap formula gives every distance. Slow (scalar, rescales on the fly),
// and only ever used for rows far outside the codebook's scale.
template <typename acc_t>
struct FarRowFitter {
  const CodebookTables<acc_t>& tables;
  std::vector<double> y;  // the row times 2^row_exp
  int row_exp = 0;        // row units: original values times 2^row_exp
  int rel_exp = 0;        // scaled codebook -> row units: times 2^rel_exp

  template <typename X>
  FarRowFitter(const CodebookTables<acc_t>& t, const X* x) : tables(t), y(t.D) {
    double max_abs = 0;
    for (int64_t k = 0; k < t.D; ++k) max_abs = std::max(max_abs, std::abs(static_cast<double>(x[k])));
    row_exp = scale_exponent(max_abs, 1 << 20);
    rel_exp = row_exp - t.scale_exp;
    for (int64_t k = 0; k < t.D; ++k) y[k] = std::ldexp(static_cast<double>(x[k]), row_exp);
  }

  int dist_exp() const { return -2 * row_exp; }

  SegmentFit segment(int64_t i) const {
    const double *c0 = tables.vertex(i), *c1 = tables.vertex(i + 1);
    // As exact_segment_t, with p0 = <y - c0', d> and p1 = <c1' - y, d> for c' = c 2^rel_exp
    // and d in scaled units: t = (p0 / ||d||^2) 2^-rel_exp, the ratio taken first.
    double p0 = 0, p1 = 0;
    for (int64_t k = 0; k < tables.D; ++k) {
      const double dk = c1[k] - c0[k];
      p0 += (y[k] - std::ldexp(c0[k], rel_exp)) * dk;
      p1 += (std::ldexp(c1[k], rel_exp) - y[k]) * dk;
    }
    const double b = tables.b64[i];
    SegmentFit f;
    f.segment = i;
    f.t = (!(b > 0.0) || p0 <= 0.0) ? 0.0 : (p1 <= 0.0 ? 1.0 : clamp_unit(std::ldexp(p0 / b, -rel_exp)));
    f.dist = 0;
    for (int64_t k = 0; k < tables.D; ++k)
      f.dist += squared_gap(y[k], std::ldexp(c0[k], rel_exp), std::ldexp(c1[k], rel_exp), f.t);
    return f;
  }
  double vertex(int64_t j) const {
    const double* c = tables.vertex(j);
    double s = 0;
    for (int64_t k = 0; k < tables.D; ++k) {
      const double ck = std::ldexp(c[k], rel_exp);
      s += squared_gap(y[k], ck, ck, 0.0);
    }
    return s;
  }
};

// Block size: keep a block's K scores per row (G) within ~512 KiB of cache,
// and make at least one block per thread.
int64_t rows_per_block(int64_t N, int64_t K, int64_t elem_size) {
  int64_t rows = std::clamp<int64_t>((int64_t{1} << 19) / (K * elem_size), 16, 512);
  const int64_t threads = torch::stable::get_num_threads();
  const int64_t per_thread = (N + threads - 1) / threads;
  rows = std::min(rows, std::max<int64_t>(8, (per_thread + 7) / 8 * 8));
  return rows;
}

// Runs the block GEMM + epilogue over all rows of x and calls
// finish(row, fitter, candidates) for each row, in parallel over blocks;
// candidates are ascending indices of segments (or vertices) that may be
// nearest, and fitter gives their exact fits (a RowFitter, or a FarRowFitter
// with every item as a candidate for a far row).
template <typename scalar_t, typename acc_t, typename Finish>
void search_rows(const Tensor& x, const CodebookTables<acc_t>& tables, bool segments, const Finish& finish) {
  using row_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
  const int64_t N = x.size(0), D = tables.D, K = tables.K;
  const int64_t items = segments ? K - 1 : K;
  const int64_t block = rows_per_block(N, K, sizeof(acc_t));
  const int64_t nblocks = (N + block - 1) / block;
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const Tensor codebook_t = torch::stable::transpose(tables.centered, 0, 1);
  std::atomic<int64_t> first_bad_row{N};

  torch::stable::parallel_for(0, nblocks, 1, [&](int64_t block_begin, int64_t block_end) {
    Tensor xc = empty({block, D}, scalar_type_of<acc_t>(), x.device());
    Tensor g = empty({block, K}, scalar_type_of<acc_t>(), x.device());
    acc_t* const xcp = xc.mutable_data_ptr<acc_t>();
    const acc_t* const gp = g.const_data_ptr<acc_t>();
    std::vector<acc_t> scores(items), row_norm(block);
    std::vector<int64_t> cand, all_items(items);
    for (int64_t i = 0; i < items; ++i) all_items[i] = i;
    std::vector<row_t> row_copy(std::is_same_v<scalar_t, row_t> ? 0 : D);
    for (int64_t blk = block_begin; blk < block_end; ++blk) {
      const int64_t r0 = blk * block, rows = std::min(block, N - r0);
      bool finite = true;
      for (int64_t r = 0; r < rows; ++r) {
        row_norm[r] = center_row(xp + (r0 + r) * D, tables.scale, tables.mean.data(), D, xcp + r * D);
        if (std::isnan(row_norm[r])) {
          int64_t seen = first_bad_row.load();
          while (r0 + r < seen && !first_bad_row.compare_exchange_weak(seen, r0 + r)) {
          }
          finite = false;
          break;
        }
        if (!(row_norm[r] <= acc_t(kFarSquaredNorm))) std::fill(xcp + r * D, xcp + (r + 1) * D, acc_t(0));
      }
      if (!finite) continue;
      // g[:rows] = xc[:rows] @ codebook_t, in place (aten::mm.out).
      call_op("aten::mm", "out", torch::stable::narrow(xc, 0, 0, rows), codebook_t, torch::stable::narrow(g, 0, 0, rows));
      for (int64_t r = 0; r < rows; ++r) {
        const scalar_t* xrow = xp + (r0 + r) * D;
        const row_t* row;
        if constexpr (std::is_same_v<scalar_t, row_t>) {
          row = xrow;
        } else {  // float16 / bfloat16: the finish reads float
          for (int64_t k = 0; k < D; ++k) row_copy[k] = static_cast<row_t>(xrow[k]);
          row = row_copy.data();
        }
        if (!(row_norm[r] <= acc_t(kFarSquaredNorm))) {
          finish(r0 + r, FarRowFitter<acc_t>(tables, row), all_items);
          continue;
        }
        const acc_t* grow = gp + r * K;
        if (segments)
          segment_scores(grow, tables.a.data(), tables.n.data(), tables.b.data(), tables.inv_b.data(), items,
                         scores.data());
        else
          vertex_scores(grow, tables.n.data(), items, scores.data());
        contenders(scores.data(), items, tables.score_tolerance(row_norm[r]), cand);
        finish(r0 + r, RowFitter<acc_t, row_t>{tables, row}, cand);
      }
    }
  });
  check_finite_rows(first_bad_row.load(), N);
}

// Among the candidate vertices, the exactly nearest; equal distances pick the lower index.
template <typename Fitter>
std::pair<int64_t, double> best_vertex(const Fitter& fitter, const std::vector<int64_t>& cand) {
  int64_t best = -1;
  double best_dist = std::numeric_limits<double>::infinity();
  for (const int64_t j : cand) {  // ascending: a strict < keeps the lowest index on ties
    const double d = fitter.vertex(j);
    if (d < best_dist) best = j, best_dist = d;
  }
  // Finite inputs always give finite distances (the fitters scale them); an
  // index outside the table would be read next, so fail loudly instead.
  check_internal(best >= 0, "no finite distance among ", cand.size(), " candidates");
  return {best, best_dist};
}

template <typename Fitter>
SegmentFit best_segment(const Fitter& fitter, const std::vector<int64_t>& cand) {
  SegmentFit best;
  for (const int64_t i : cand) {  // ascending: a strict < keeps the lowest index on ties
    const SegmentFit f = fitter.segment(i);
    if (f.dist < best.dist) best = f;
  }
  check_internal(best.segment >= 0, "no finite distance among ", cand.size(), " candidates");
  return best;
}

template <typename scalar_t, typename acc_t>
void project_typed(const Tensor& x, const Tensor& codebook, bool vertex_rule, Projection& out) {
  const int64_t K = codebook.size(0), D = codebook.size(1);
  const CodebookTables<acc_t> tables(codebook, /*with_segments=*/true, scalar_t{});
  using out_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
  scalar_t* point = out.point.mutable_data_ptr<scalar_t>();
  int64_t* segment = out.segment.mutable_data_ptr<int64_t>();
  out_t* t_out = out.t.mutable_data_ptr<out_t>();
  out_t* coord = out.coord.mutable_data_ptr<out_t>();
  out_t* dist = out.dist.mutable_data_ptr<out_t>();

  // dist_exp: the fitter's distances times 2^dist_exp are in the input's units
  // (Inf where they exceed the output dtype: the segment, t and point stay exact).
  auto write = [&](int64_t r, const SegmentFit& f, int dist_exp) {
    segment[r] = f.segment;
    t_out[r] = static_cast<out_t>(f.t);
    coord[r] = static_cast<out_t>(static_cast<double>(f.segment) + f.t);
    dist[r] = static_cast<out_t>(std::ldexp(f.dist, dist_exp));
    write_point(tables.vertex(f.segment), tables.vertex(f.segment + 1), f.t, tables.unscale64, D, point + r * D);
  };

  if (!vertex_rule) {
    search_rows<scalar_t, acc_t>(x, tables, /*segments=*/true, [&](int64_t r, const auto& fitter, const auto& cand) {
      write(r, best_segment(fitter, cand), fitter.dist_exp());
    });
    return;
  }
  // The original authors' rule: nearest vertex j, moved into [1, K-2], then the
  // better of segments j-1 and j (the lower one when they are equally good).
  search_rows<scalar_t, acc_t>(x, tables, /*segments=*/false, [&](int64_t r, const auto& fitter, const auto& cand) {
    if (K == 2) return write(r, fitter.segment(0), fitter.dist_exp());
    const int64_t j = std::clamp<int64_t>(best_vertex(fitter, cand).first, 1, K - 2);
    const SegmentFit before = fitter.segment(j - 1), after = fitter.segment(j);
    write(r, after.dist < before.dist ? after : before, fitter.dist_exp());
  });
}

template <typename scalar_t, typename acc_t>
void nearest_typed(const Tensor& x, const Tensor& points, Tensor& index, Tensor& dist) {
  const CodebookTables<acc_t> tables(points, /*with_segments=*/false, scalar_t{});
  using out_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
  int64_t* index_p = index.mutable_data_ptr<int64_t>();
  out_t* dist_p = dist.mutable_data_ptr<out_t>();
  search_rows<scalar_t, acc_t>(x, tables, /*segments=*/false, [&](int64_t r, const auto& fitter, const auto& cand) {
    const auto [j, d] = best_vertex(fitter, cand);
    index_p[r] = j;
    dist_p[r] = static_cast<out_t>(std::ldexp(d, fitter.dist_exp()));
  });
}

}  // namespace

void project(const Tensor& x, const Tensor& codebook, bool vertex_rule, Projection& out) {
  if (x.size(0) == 0) return;
  dispatch_floating(x.scalar_type(), "sfvq.project", [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    project_typed<scalar_t, acc_t>(x, codebook, vertex_rule, out);
  });
}

void nearest(const Tensor& x, const Tensor& points, Tensor& index, Tensor& dist) {
  if (x.size(0) == 0) return;
  dispatch_floating(x.scalar_type(), "sfvq.nearest", [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    nearest_typed<scalar_t, acc_t>(x, points, index, dist);
  });
}

}  // namespace sfvq::cpu
