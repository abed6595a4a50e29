// CUDA pieces of the stable ABI the CUDA host code uses (compiled with USE_CUDA,
// which declares torch's CUDA shims). Missing from torch::stable at 2.10: the
// native handle of the current stream (torch::stable::accelerator::Stream has
// nativeHandle() only from 2.13), so it comes from the AOTI C shim's
// aoti_torch_get_current_cuda_stream, which libtorch_cuda exports at 2.10.
#pragma once

#include <cuda_runtime_api.h>
#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/macros.h>

#include "sfvq/stable.h"

namespace sfvq::cuda {

// Sets the current device for its lifetime (c10::cuda::CUDAGuard before the port).
using DeviceGuard = torch::stable::accelerator::DeviceGuard;

inline int32_t device_index(const Tensor& t) { return static_cast<int32_t>(t.get_device_index()); }

// torch's current stream on the tensor's device.
inline cudaStream_t current_stream(const Tensor& t) {
  void* stream = nullptr;
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_get_current_cuda_stream(device_index(t), &stream));
  return static_cast<cudaStream_t>(stream);
}

}  // namespace sfvq::cuda
