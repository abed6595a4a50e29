"""Small inputs that reach every CUDA code path of project/nearest, for
compute-sanitizer (not collected by pytest):

    compute-sanitizer --tool memcheck  python tests/cuda_sanitizer_inputs.py
    compute-sanitizer --tool racecheck python tests/cuda_sanitizer_inputs.py
"""

import sys

import torch

import sfvq_ext
from sfvq_ext import _C_cuda as _C  # the CUDA kernels' module and its hooks


def main() -> None:
    torch.manual_seed(0)
    dev = "cuda"
    cases = [
        (torch.randn(300, 64), torch.randn(130, 64)),  # cp.async loader, two column tiles (carry)
        (torch.randn(257, 33), torch.randn(129, 33)),  # generic loader, D % 4 != 0
        (torch.randn(200, 40).double(), torch.randn(20, 40).double()),  # float64
        (torch.randn(200, 16).half(), torch.randn(20, 16).half()),  # float16
        (torch.randn(100, 8).bfloat16(), torch.randn(3, 8).bfloat16()),  # bfloat16, K = 3
        (torch.randn(50, 2), torch.tensor([[0.0, 0.0], [1.0, 0.0]] * 8)),  # zigzag: brute force rows
        # small-codebook kernel (when switched on): more rows than its grid has warps; K = 32 with
        # D = 388 (the last float4 group of the lanes partly filled)
        (torch.randn(3000, 128), torch.randn(16, 128)),
        (torch.randn(100, 388), torch.randn(32, 388)),
        (torch.randn(64, 8), torch.tensor([[0.0] * 8, [1.0] + [0.0] * 7] * 4)),  # zigzag, K = 8
    ]
    for force, small_k in ((False, False), (True, False), (False, True)):
        _C._cuda_force_fallback(force)
        _C._cuda_small_k_kernel(small_k)
        for x, c in cases:
            x, c = x.to(dev), c.to(dev)
            for mode in ("exact", "vertex"):
                sfvq_ext.project(x, c, mode=mode)
            sfvq_ext.nearest(x, c)
            sfvq_ext.nearest(x, c[:1])
    _C._cuda_force_fallback(False)
    _C._cuda_small_k_kernel(False)
    misaligned = torch.randn(129 * 32 + 1, device=dev)[1:].view(129, 32)
    sfvq_ext.project(misaligned, torch.randn(64, 32, device=dev))
    if "--no-error-path" not in sys.argv:  # a NaN row: the kernel reports it, the host raises
        bad = torch.randn(10, 4, device=dev)
        bad[3, 1] = float("nan")
        for small_k in (False, True):
            _C._cuda_small_k_kernel(small_k)
            try:
                sfvq_ext.project(bad, torch.randn(8, 4, device=dev))
            except ValueError:
                pass
        _C._cuda_small_k_kernel(False)
    torch.cuda.synchronize()
    print("sanitizer inputs: all calls completed")


if __name__ == "__main__":
    main()
