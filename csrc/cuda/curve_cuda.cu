// CUDA curve decoding (coordinate -> point) and codebook expansion (K -> 2K).
// One thread per output element, 64-bit indexing, current stream.
#include <type_traits>

#include "sfvq/kernels.h"
#include "stable_cuda.h"
#include "sfvq/segment.h"

namespace sfvq::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
using acc_type = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Where output row r sits on the curve, as (segment j, fraction f): from a
// coordinate tensor (decode) or from the expansion rule (expand).
// Coordinates are read in float64 whatever their dtype: float32 cannot place
// u = 2^24 + 0.5, and the codebook's dtype must not round the coordinate.
template <typename acc_t>
struct LocateCoordinate {
  const double* u;
  int64_t K;
  __device__ void operator()(int64_t r, int64_t& j, acc_t& f) const {
    double f64;
    locate_coordinate(u[r], K, j, f64);
    f = static_cast<acc_t>(f64);
  }
};
template <typename acc_t>
struct LocateExpansion {
  int64_t K;
  acc_t eps;
  __device__ void operator()(int64_t n, int64_t& j, acc_t& f) const { expanded_vertex_location(n, K, eps, j, f); }
};

template <typename scalar_t, typename Locate>
__global__ void points_at_kernel(const scalar_t* __restrict__ c, int64_t D, int64_t rows, Locate locate,
                                 scalar_t* __restrict__ out) {
  using acc_t = acc_type<scalar_t>;
  const int64_t total = rows * D;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = e / D, k = e - r * D;
    int64_t j;
    acc_t f;
    locate(r, j, f);
    out[e] = static_cast<scalar_t>(lerp(static_cast<acc_t>(c[j * D + k]), static_cast<acc_t>(c[(j + 1) * D + k]), f));
  }
}

template <typename scalar_t, typename Locate>
void launch_points_at(const Tensor& codebook, int64_t rows, Locate locate, Tensor& out) {
  const int64_t total = rows * codebook.size(1);
  if (total == 0) return;
  const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, int64_t{1} << 20);
  points_at_kernel<scalar_t><<<blocks, kThreads, 0, current_stream(codebook)>>>(
      codebook.const_data_ptr<scalar_t>(), codebook.size(1), rows, locate, out.mutable_data_ptr<scalar_t>());
  STD_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void decode(const Tensor& coord, const Tensor& codebook, Tensor& out) {
  const DeviceGuard guard(device_index(codebook));
  const Tensor u = torch::stable::contiguous(to_dtype(coord, ScalarType::Double));
  dispatch_floating(codebook.scalar_type(), "sfvq.decode", [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = acc_type<scalar_t>;
    launch_points_at<scalar_t>(codebook, u.numel(), LocateCoordinate<acc_t>{u.const_data_ptr<double>(), codebook.size(0)}, out);
  });
}

void expand(const Tensor& codebook, double eps, Tensor& out) {
  const DeviceGuard guard(device_index(codebook));
  dispatch_floating(codebook.scalar_type(), "sfvq.expand", [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = acc_type<scalar_t>;
    launch_points_at<scalar_t>(codebook, 2 * codebook.size(0),
                               LocateExpansion<acc_t>{codebook.size(0), static_cast<acc_t>(eps)}, out);
  });
}

}  // namespace sfvq::cuda
