// The importable extension module sfvq_ext._C. Loading it registers the
// operator schemas and the CPU kernels (torch.ops.sfvq.*, python/ops.cpp); the
// module itself reports build facts. The CUDA kernels are a separate module,
// sfvq_ext._C_cuda (python/ops_cuda.cpp). No torch header here: pybind11 ties
// the module to the Python version only, the stable ABI ties it to torch >= 2.10.
#include <pybind11/pybind11.h>

PYBIND11_MODULE(_C, m) {
  m.doc() = "sfvq_ext compiled operators (registered as torch.ops.sfvq.*)";
  // The torch whose headers this was compiled with, and the oldest torch it runs on.
  m.attr("built_with_torch") = SFVQ_TORCH_VERSION;
  m.attr("torch_target") = SFVQ_TORCH_TARGET;
  // Whether this build compiled the CUDA kernels (sfvq_ext/_C_cuda).
  m.attr("cuda_built") = static_cast<bool>(SFVQ_WITH_CUDA);
}
