// Operator schemas of the extension (one block) and their CPU registrations,
// on the LibTorch stable ABI (STABLE_TORCH_LIBRARY, TORCH_BOX). The CUDA
// registrations are in python/ops_cuda.cpp, a separate library (sfvq_ext/_C_cuda)
// loaded only under a CUDA build of torch.
#include "ops_common.h"

STABLE_TORCH_LIBRARY(sfvq, m) {
  // Fake (meta) kernels and autograd are registered from Python, in sfvq_ext.ops
  // (which sfvq_ext imports with this library).
  // Nearest point on the piecewise-linear curve through the codebook rows.
  //   x: (..., D); codebook: (K, D), K >= 2, same dtype (float16/bfloat16/float32/float64) and device.
  //   mode: "exact" (true nearest point) or "vertex" (the original authors' rule).
  //   -> point (..., D) dtype of x; segment (...) int64 in [0, K-2]; t (...) in [0, 1];
  //      coord (...) = segment + t; dist (...) squared distance. t, coord, dist are float32
  //      (float64 for float64 input). Ties go to the smallest segment index.
  m.def(
      "project(Tensor x, Tensor codebook, str mode=\"exact\") -> "
      "(Tensor point, Tensor segment, Tensor t, Tensor coord, Tensor dist)");
  // Plain nearest neighbour. x: (..., D); points: (M, D), M >= 1.
  //   -> index (...) int64, dist (...) squared distance, float32 (float64 for float64 input).
  m.def("nearest(Tensor x, Tensor points) -> (Tensor index, Tensor dist)");
  // Curve points at coordinates. coord: (...) floating, clamped to [0, K-1]; codebook: (K, D).
  //   -> (..., D) dtype of codebook.
  m.def("decode(Tensor coord, Tensor codebook) -> Tensor");
  // Doubled codebook (K, D) -> (2K, D): vertex j < K/2 becomes coordinates j, j + eps;
  //   vertex j >= K/2 becomes j - eps, j. 0 < eps < 0.5.
  m.def("expand(Tensor codebook, float eps=0.01) -> Tensor");
  // Training step's quantizer. x: (..., D); codebook: (K, D), K >= 2; dither: (K-1,) in [0, 1),
  //   one value per segment. Each row goes to the nearest dithered point
  //   p_i = (1 - r_i) c_i + r_i c_{i+1}. -> quantized (..., D) = p_segment; segment (...) int64.
  m.def("dithered_quantize(Tensor x, Tensor codebook, Tensor dither) -> (Tensor quantized, Tensor segment)");
  // Its backward: grad (..., D) of quantized, the forward's codebook, dither and segment
  //   -> gradients of codebook (K, D) and dither (K-1,).
  m.def(
      "dithered_quantize_backward(Tensor grad, Tensor codebook, Tensor dither, Tensor segment) -> "
      "(Tensor grad_codebook, Tensor grad_dither)");
}

// Built from aten ops only, so one registration serves every device.
STABLE_TORCH_LIBRARY_IMPL(sfvq, CompositeExplicitAutograd, m) {
  m.impl("dithered_quantize_backward", TORCH_BOX(&sfvq::binding::dithered_quantize_backward));
}

STABLE_TORCH_LIBRARY_IMPL(sfvq, CPU, m) {
  using namespace sfvq;
  m.impl("project", TORCH_BOX(&binding::project<&cpu::project>));
  m.impl("nearest", TORCH_BOX(&binding::nearest<&cpu::nearest>));
  m.impl("decode", TORCH_BOX(&binding::decode<&cpu::decode>));
  m.impl("expand", TORCH_BOX(&binding::expand<&cpu::expand>));
  m.impl("dithered_quantize", TORCH_BOX(&binding::dithered_quantize<&cpu::nearest>));
}
