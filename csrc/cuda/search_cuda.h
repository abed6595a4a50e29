// Interface between the host side of the CUDA search (search_cuda_host.cpp,
// which prepares codebook tables with aten ops) and its kernels (search_cuda.cu,
// which sees only raw pointers). Kept free of torch headers so the .cu
// compiles quickly.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace sfvq::cuda {

// Codebook terms for one call, all on the device. "Centred" means minus the
// codebook mean m (float32); the GEMM runs on TF32-rounded centred values.
struct SearchTables {
  const float* centered;   // (K, Dp) centred codebook rounded to TF32, zero-padded to Dp
  const float* mean;       // (Dp,) m, zero-padded
  const double* mean64;    // (Dp,) m as float64 (centres float64 inputs without rounding first)
  const float* n;          // (K,) ||centered_j||^2
  const float* a;          // (K-1,) <centered_i, centered_{i+1} - centered_i>
  const float* b;          // (K-1,) ||centered_{i+1} - centered_i||^2
  const float* inv_b;      // (K-1,) 1 / b, or 0 for a zero-length segment
  const double* b64;       // (K-1,) ||c_{i+1} - c_i||^2 of the original codebook, float64
  int64_t K = 0, D = 0, Dp = 0;
  float norm_max = 0;      // >= max_j ||centered_j||
  float delta_c = 0;       // >= max_j ||centered_j - (c_j - m)||: how far TF32 rounding moved a vertex
  bool force_fallback = false;  // tests: send every row through the brute-force kernel
  bool vec4 = false;            // float32 x and codebook rows 16-byte aligned (D % 4 == 0): cp.async
                                // tiles and 16-byte loads in the exact finish
  bool small_k = false;         // vec4, K <= kSmallKMax, D <= kSmallKMaxD: the warp-per-row kernel
};

// Limits of the small-codebook kernel (codebook in shared memory, one warp per row).
constexpr int64_t kSmallKMax = 32;
constexpr int64_t kSmallKMaxD = 512;  // 4 float4s per lane: more spills registers
// Its shared memory: the centred codebook, K x D floats.
constexpr int64_t small_k_smem_bytes(int64_t K, int64_t D) { return K * D * 4; }

enum class SearchMode : int { kProjectExact = 0, kProjectVertex = 1, kNearest = 2 };

// Outputs (typed by the kernels from the input dtype). Unused ones may be null.
struct SearchOutputs {
  void* point = nullptr;        // (N, D) input dtype                      (project)
  int64_t* index = nullptr;     // (N,) segment (project) or vertex index (nearest)
  void* t = nullptr;            // (N,) float32, float64 for float64 input (project)
  void* coord = nullptr;        // (N,) same dtype as t                     (project)
  void* dist = nullptr;         // (N,) same dtype as t
  int64_t* fallback_rows = nullptr;  // (N,) rows whose candidates could not be certified
  // status[0]: smallest row holding NaN/Inf (N if none); status[1]: number of fallback rows.
  int64_t* status = nullptr;
};

enum class InputType : int { kFloat = 0, kDouble = 1, kHalf = 2, kBFloat16 = 3 };

// Fused pass: TF32 tensor-core GEMM tiles, per-segment (or per-vertex) scores,
// running best-candidate lists, exact float64 finish of certified rows.
void launch_search(InputType type, const void* x, const void* codebook, int64_t N, const SearchTables& tables,
                   SearchMode mode, const SearchOutputs& out, cudaStream_t stream);

// Rounds float32 values to TF32 in place (10 explicit mantissa bits, to nearest
// with ties away from zero, as cvt.rna.tf32.f32 does): add half a TF32 unit to
// the magnitude bits, then clear the 13 dropped bits. Finite values only.
void launch_round_to_tf32(float* data, int64_t n, cudaStream_t stream);

// Brute force in float64 over every segment (or vertex) for the rows listed in
// out.fallback_rows[0 .. count).
void launch_fallback(InputType type, const void* x, const void* codebook, int64_t count,
                     const SearchTables& tables, SearchMode mode, const SearchOutputs& out, cudaStream_t stream);

}  // namespace sfvq::cuda
