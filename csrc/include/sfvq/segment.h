// Point-to-segment and curve-coordinate math, written once and shared by the
// CPU and CUDA kernels. Everything here is a tiny inline function on scalars.
//
// Curve: ordered vertices c_0 .. c_{K-1}; segment i joins c_i to c_{i+1},
// direction d_i = c_{i+1} - c_i. See DESIGN.md section 1.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define SFVQ_HD __host__ __device__ __forceinline__
#else
#define SFVQ_HD inline
#endif

namespace sfvq {

// 1 / ||d||^2, or 0 for a zero-length segment: multiplying by it then gives
// t = 0 there, which is the nearest point rule for a degenerate segment.
template <typename T>
SFVQ_HD T inverse_or_zero(T squared_length) {
  return squared_length > T(0) ? T(1) / squared_length : T(0);
}

template <typename T>
SFVQ_HD T clamp_unit(T v) {
  return v < T(0) ? T(0) : (v > T(1) ? T(1) : v);
}

// Parameter of the nearest point c + t d on a segment, t in [0, 1], from
// p = <x - c, d> and 1/||d||^2.
template <typename T>
SFVQ_HD T segment_t(T p, T inv_squared_length) {
  return clamp_unit(p * inv_squared_length);
}

// t of the exact finish, from p0 = <x - c0, d> and p1 = <c1 - x, d> (p0 + p1 = b
// = ||d||^2 in exact arithmetic). t is exactly 0 when x = c0 and exactly 1 when
// x = c1 (p0, resp. p1, is then a sum of exact zeros): a row sitting on vertex j
// gets bit-identical distances from segments j-1 and j, however p and b round.
SFVQ_HD double exact_segment_t(double p0, double p1, double b) {
  if (!(b > 0.0) || p0 <= 0.0) return 0.0;
  if (p1 <= 0.0) return 1.0;
  return clamp_unit(p0 / b);
}

// ||x - c - t d||^2 from q = ||x - c||^2, p = <x - c, d>, b = ||d||^2.
// Exact algebra, but it cancels when the result is much smaller than q.
template <typename T>
SFVQ_HD T expanded_squared_distance(T q, T p, T b, T t) {
  return q - T(2) * t * p + t * t * b;
}


// Expanded distance from x to segment i up to the per-row constant ||x||^2,
// with g_j = <x, c_j>, a_i = <c_i, d_i>, n_i = ||c_i||^2, b_i = ||d_i||^2:
// <x - c_i, d_i> = g_{i+1} - g_i - a_i and ||x - c_i||^2 - ||x||^2 = n_i - 2 g_i.
template <typename T>
SFVQ_HD T segment_score(T g_i, T g_next, T a_i, T n_i, T b_i, T inv_b_i) {
  const T p = g_next - g_i - a_i;
  const T t = segment_t(p, inv_b_i);
  return expanded_squared_distance(n_i - T(2) * g_i, p, b_i, t);
}

// The point (1 - f) a + f b. This form returns b exactly at f = 1, so curve
// points at integer coordinates are the codebook vectors themselves.
template <typename T>
SFVQ_HD T lerp(T a, T b, T f) {
  return (T(1) - f) * a + f * b;
}

// One term of the final distance ||x - lerp(c0, c1, t)||^2, the only formula
// any returned (or compared) exact distance is made of. Because lerp gives c1
// exactly at t = 1 and c0 at t = 0, segments j-1 (t = 1) and j (t = 0) meeting
// at vertex j get bit-identical distances, so exact ties stay exact and go to
// the smallest index.
template <typename T>
SFVQ_HD T squared_gap(T x, T c0, T c1, T t) {
  const T e = x - lerp(c0, c1, t);
  return e * e;
}

// Power-of-two scaling (DESIGN.md section 6). Multiplying inputs and codebook by
// 2^e is exact in binary floating point (away from subnormals), so the search can
// run on values of order 1, where products neither overflow nor underflow, and
// distances scale back by 2^(-2e) exactly. The exponent puts max_abs in [0.5, 1),
// clamped to [-max_exp, max_exp] so that 2^e and 2^-e are representable.
SFVQ_HD int scale_exponent(double max_abs, int max_exp) {
  if (!(max_abs > 0.0)) return 0;
  int e = 0;
  frexp(max_abs, &e);  // max_abs = m 2^e with m in [0.5, 1)
  e = -e;
  return e < -max_exp ? -max_exp : (e > max_exp ? max_exp : e);
}

// Curve coordinate u -> (segment j, fraction f) for a curve of K >= 2 vertices:
// u is clamped to [0, K-1], j = min(floor(u), K-2), f = u - j in [0, 1].
template <typename T>
SFVQ_HD void locate_coordinate(T u, int64_t K, int64_t& j, T& f) {
  const T last = static_cast<T>(K - 1);
  u = u < T(0) ? T(0) : (u > last ? last : u);
  int64_t jj = static_cast<int64_t>(floor(u));
  if (jj > K - 2) jj = K - 2;
  j = jj;
  f = u - static_cast<T>(jj);
}

// Expansion K -> 2K: where new vertex n (0 <= n < 2K) sits, as (segment j,
// fraction f). Old vertex v < K/2 spawns the points at coordinates v and
// v + eps; old vertex v >= K/2 spawns v - eps and v. Given as (j, f) rather
// than a coordinate so that f = eps keeps full precision far along the curve.
// The curve keeps its shape and both end points.
template <typename T>
SFVQ_HD void expanded_vertex_location(int64_t n, int64_t K, T eps, int64_t& j, T& f) {
  const int64_t v = n / 2;
  const bool second = (n % 2) == 1;
  if (v < K / 2) {  // v or v + eps: on segment v (v <= K-2 here)
    j = v;
    f = second ? eps : T(0);
  } else if (!second) {  // v - eps: on segment v - 1 (v >= 1 here)
    j = v - 1;
    f = T(1) - eps;
  } else {  // v itself: the end of segment v - 1
    j = v - 1;
    f = T(1);
  }
}

}  // namespace sfvq
