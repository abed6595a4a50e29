// The importable extension module sfvq_ext._C. Loading it registers the
// operators (torch.ops.sfvq.*); the module itself reports build facts and,
// in CUDA builds, exposes hooks used by tests and benchmarks.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#if SFVQ_WITH_CUDA
#include "sfvq/kernels.h"
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() = "sfvq_ext compiled operators (registered as torch.ops.sfvq.*)";
  m.attr("cuda_built") = static_cast<bool>(SFVQ_WITH_CUDA);
  m.attr("torch_version") = SFVQ_TORCH_VERSION;
#if SFVQ_WITH_CUDA
  m.def("_cuda_force_fallback", &sfvq::cuda::set_force_fallback,
        "Send every row of CUDA project/nearest through the float64 brute-force kernel (tests only).");
  m.def("_cuda_small_k_kernel", &sfvq::cuda::set_small_k_kernel,
        "Use the small-codebook kernel (K <= 32, aligned float32, D <= 512) for CUDA project/nearest "
        "(opt-in: not yet run on a GPU).");
  m.def("_cuda_last_search_stats", &sfvq::cuda::last_search_stats,
        "(rows, brute-forced rows) of the last CUDA project/nearest call.");
  m.def("_cuda_last_search_kernel", &sfvq::cuda::last_search_kernel,
        "Which kernel ran the last CUDA project/nearest call: 'fused' or 'small_k'.");
#endif
}
