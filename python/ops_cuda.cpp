// CUDA registrations (compiled only when the extension is built with CUDA).
#include <torch/library.h>

#include "ops_common.h"

namespace sfvq::binding {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> project_cuda(const at::Tensor& x,
                                                                                    const at::Tensor& codebook,
                                                                                    c10::string_view mode) {
  return project(x, codebook, mode, &cuda::project);
}
std::tuple<at::Tensor, at::Tensor> nearest_cuda(const at::Tensor& x, const at::Tensor& points) {
  return nearest(x, points, &cuda::nearest);
}
at::Tensor decode_cuda(const at::Tensor& coord, const at::Tensor& codebook) {
  return decode(coord, codebook, &cuda::decode);
}
at::Tensor expand_cuda(const at::Tensor& codebook, double eps) { return expand(codebook, eps, &cuda::expand); }

}  // namespace
}  // namespace sfvq::binding

TORCH_LIBRARY_IMPL(sfvq, CUDA, m) {
  m.impl("project", &sfvq::binding::project_cuda);
  m.impl("nearest", &sfvq::binding::nearest_cuda);
  m.impl("decode", &sfvq::binding::decode_cuda);
  m.impl("expand", &sfvq::binding::expand_cuda);
}
