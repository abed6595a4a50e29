// The importable extension module sfvq_ext._C. Loading it registers the
// operators (torch.ops.sfvq.*); the module itself reports build facts and,
// in CUDA builds, exposes two hooks used by tests and benchmarks.
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
  m.def("_cuda_last_search_stats", &sfvq::cuda::last_search_stats,
        "(rows, brute-forced rows) of the last CUDA project/nearest call.");
#endif
}
