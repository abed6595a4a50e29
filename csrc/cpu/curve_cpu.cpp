// CPU curve decoding (coordinate -> point) and codebook expansion (K -> 2K).
#include <type_traits>

#include "sfvq/kernels.h"
#include "sfvq/segment.h"

namespace sfvq::cpu {
namespace {

// out[r] = the curve point locate(r) names as (segment j, fraction f), for r in [0, rows).
template <typename scalar_t, typename Locate>
void points_at(const Tensor& codebook, int64_t rows, const Locate& locate, Tensor& out) {
  using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
  const int64_t D = codebook.size(1);
  const scalar_t* c = codebook.const_data_ptr<scalar_t>();
  scalar_t* o = out.mutable_data_ptr<scalar_t>();
  torch::stable::parallel_for(0, rows, 256, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      int64_t j;
      acc_t f;
      locate(r, j, f);
      const scalar_t *c0 = c + j * D, *c1 = c0 + D;
      for (int64_t k = 0; k < D; ++k)
        o[r * D + k] = static_cast<scalar_t>(lerp(static_cast<acc_t>(c0[k]), static_cast<acc_t>(c1[k]), f));
    }
  });
}

}  // namespace

void decode(const Tensor& coord, const Tensor& codebook, Tensor& out) {
  const int64_t K = codebook.size(0);
  // Coordinates are read in float64 whatever their dtype: float32 cannot place
  // u = 2^24 + 0.5, and the codebook's dtype must not round the coordinate.
  const Tensor u = torch::stable::contiguous(to_dtype(coord, ScalarType::Double));
  const double* up = u.const_data_ptr<double>();
  dispatch_floating(codebook.scalar_type(), "sfvq.decode", [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    points_at<scalar_t>(codebook, u.numel(), [up, K](int64_t r, int64_t& j, acc_t& f) {
      double f64;
      locate_coordinate(up[r], K, j, f64);
      f = static_cast<acc_t>(f64);
    }, out);
  });
}

void expand(const Tensor& codebook, double eps, Tensor& out) {
  const int64_t K = codebook.size(0);
  dispatch_floating(codebook.scalar_type(), "sfvq.expand", [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const acc_t e = static_cast<acc_t>(eps);
    points_at<scalar_t>(codebook, 2 * K, [K, e](int64_t n, int64_t& j, acc_t& f) { expanded_vertex_location(n, K, e, j, f); }, out);
  });
}

}  // namespace sfvq::cpu
