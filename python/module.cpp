// The importable extension module sfvq_ext._C. Loading it registers the
// operators (torch.ops.sfvq.*); the module itself only reports build facts.
#include <pybind11/pybind11.h>

PYBIND11_MODULE(_C, m) {
  m.doc() = "sfvq_ext compiled operators (registered as torch.ops.sfvq.*)";
  m.attr("cuda_built") = static_cast<bool>(SFVQ_WITH_CUDA);
  m.attr("torch_version") = SFVQ_TORCH_VERSION;
}
