"""sfvq_ext: space-filling vector quantization (SFVQ) operators for PyTorch.

The codebook ``C = [c_0 ... c_{K-1}]`` is read as a piecewise-linear curve;
:func:`project` finds the exact nearest point on it, :func:`decode` maps curve
coordinates back to points, :func:`expand` doubles the codebook and
:func:`init_codebook` gives the 4-vector starting curve.
"""

import torch  # noqa: F401  (loads libtorch: the compiled extension links to it without an rpath)

from . import _C
from .ops import Projection, decode, dithered_quantize, expand, init_codebook, nearest, project
from .quantizer import SFVQ
from .checkpoint import load, save
from .fit import fit
from .interpret import directions

__version__ = "0.1.0"

__all__ = ["SFVQ", "fit", "save", "load", "directions", "Projection", "project", "nearest", "decode", "expand", "dithered_quantize", "init_codebook", "build_info", "__version__"]


def build_info() -> dict:
    """Facts about the compiled extension and the torch it runs with."""
    return {
        "sfvq_ext": __version__,
        "built_with_torch": _C.torch_version,
        "torch": torch.__version__,
        "cuda_kernels": bool(_C.cuda_built),
        "cuda_available": torch.cuda.is_available(),
        "threads": torch.get_num_threads(),
    }
