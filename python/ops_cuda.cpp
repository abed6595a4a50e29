// CUDA registrations (compiled only when the extension is built with CUDA).
// project and nearest have no CUDA kernel yet: the dispatcher reports that clearly.
#include <torch/library.h>

#include "ops_common.h"

namespace sfvq::binding {
namespace {

at::Tensor decode_cuda(const at::Tensor& coord, const at::Tensor& codebook) {
  return decode(coord, codebook, &cuda::decode);
}
at::Tensor expand_cuda(const at::Tensor& codebook, double eps) { return expand(codebook, eps, &cuda::expand); }

}  // namespace
}  // namespace sfvq::binding

TORCH_LIBRARY_IMPL(sfvq, CUDA, m) {
  m.impl("decode", &sfvq::binding::decode_cuda);
  m.impl("expand", &sfvq::binding::expand_cuda);
}
