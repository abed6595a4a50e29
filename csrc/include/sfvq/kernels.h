// Kernel entry points. They take validated tensors (2-D, contiguous, same
// dtype and device, finite codebook) and fill preallocated outputs; argument
// checking and dispatch live in python/ops_common.h. Tensors are the stable
// ABI's (sfvq/stable.h).
#pragma once

#include <string>
#include <utility>

#include "sfvq/stable.h"

namespace sfvq {

// Outputs of the projection onto the curve, one entry per row of x.
struct Projection {
  Tensor point;    // (N, D), dtype of x
  Tensor segment;  // (N,), int64
  Tensor t;        // (N,), float32 (float64 for float64 input)
  Tensor coord;    // (N,), segment + t, same dtype as t
  Tensor dist;     // (N,), squared distance, same dtype as t
};

// Raises the ValueError of the NaN/Inf policy: first_bad_row is the smallest
// row of x (flattened to (N, D)) holding NaN or Inf, or N if there is none.
inline void check_finite_rows(int64_t first_bad_row, int64_t N) {
  check_value(first_bad_row == N, "sfvq: x contains NaN or Inf (first at row ", first_bad_row,
                    " of the input flattened to (N, D)); remove or replace non-finite rows first");
}

namespace cpu {
// x: (N, D), codebook: (K, D), K >= 2. vertex_rule: the original authors' rule
// (nearest vertex, then the better of its two segments) instead of the exact one.
void project(const Tensor& x, const Tensor& codebook, bool vertex_rule, Projection& out);
// x: (N, D), points: (M, D), M >= 1. index: (N,) int64, dist: (N,) like Projection::dist.
void nearest(const Tensor& x, const Tensor& points, Tensor& index, Tensor& dist);
// coord: (N,) floating, codebook: (K, D). out: (N, D), dtype of codebook.
void decode(const Tensor& coord, const Tensor& codebook, Tensor& out);
// codebook: (K, D). out: (2K, D).
void expand(const Tensor& codebook, double eps, Tensor& out);
}  // namespace cpu

namespace cuda {
// Same contracts as the CPU kernels above; inputs on one CUDA device.
void project(const Tensor& x, const Tensor& codebook, bool vertex_rule, Projection& out);
void nearest(const Tensor& x, const Tensor& points, Tensor& index, Tensor& dist);
void decode(const Tensor& coord, const Tensor& codebook, Tensor& out);
void expand(const Tensor& codebook, double eps, Tensor& out);
// Test and benchmark hooks of project/nearest: route every row through the
// float64 brute-force kernel; use the small-codebook kernel where it applies
// (opt-in until verified on a GPU); rows and brute-forced rows of the last
// call, and which kernel ("fused" or "small_k") ran it.
void set_force_fallback(bool on);
void set_small_k_kernel(bool on);
std::pair<int64_t, int64_t> last_search_stats();
std::string last_search_kernel();
}  // namespace cuda

}  // namespace sfvq
