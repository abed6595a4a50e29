// CUDA registrations, on the LibTorch stable ABI. Built into their own library
// (sfvq_ext/_C_cuda), which sfvq_ext loads only under a CUDA build of torch:
// the CPU ops in sfvq_ext/_C never depend on it. The module also carries the
// CUDA test and benchmark hooks.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "ops_common.h"

STABLE_TORCH_LIBRARY_IMPL(sfvq, CUDA, m) {
  using namespace sfvq;
  m.impl("project", TORCH_BOX(&binding::project<&cuda::project>));
  m.impl("nearest", TORCH_BOX(&binding::nearest<&cuda::nearest>));
  m.impl("decode", TORCH_BOX(&binding::decode<&cuda::decode>));
  m.impl("expand", TORCH_BOX(&binding::expand<&cuda::expand>));
  m.impl("dithered_quantize", TORCH_BOX(&binding::dithered_quantize<&cuda::nearest>));
}

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "sfvq_ext CUDA kernels (importing it registers the CUDA implementations of torch.ops.sfvq.*)";
  m.def("_cuda_force_fallback", &sfvq::cuda::set_force_fallback,
        "Send every row of CUDA project/nearest through the float64 brute-force kernel (tests only).");
  m.def("_cuda_small_k_kernel", &sfvq::cuda::set_small_k_kernel,
        "Use the small-codebook kernel (K <= 32, aligned float32, D <= 512) for CUDA project/nearest "
        "(opt-in: not yet run on a GPU).");
  m.def("_cuda_last_search_stats", &sfvq::cuda::last_search_stats,
        "(rows, brute-forced rows) of the last CUDA project/nearest call.");
  m.def("_cuda_last_search_kernel", &sfvq::cuda::last_search_kernel,
        "Which kernel ran the last CUDA project/nearest call: 'fused' or 'small_k'.");
}
