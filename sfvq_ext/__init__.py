"""sfvq_ext: space-filling vector quantization (SFVQ) operators for PyTorch.

The codebook ``C = [c_0 ... c_{K-1}]`` is read as a piecewise-linear curve;
:func:`project` finds the exact nearest point on it, :func:`decode` maps curve
coordinates back to points, :func:`expand` doubles the codebook and
:func:`init_codebook` gives the 4-vector starting curve.
"""

import torch as _torch  # loads libtorch: the compiled extension links to it without an rpath

# The oldest torch the compiled extension runs on: it is built on the LibTorch
# stable ABI of this version, so any newer torch runs it without a rebuild.
# CMakeLists.txt reads this line (TORCH_TARGET_VERSION).
TORCH_TARGET = "2.10"


def _check_torch_version() -> None:
    import re

    found = re.match(r"(\d+)\.(\d+)", _torch.__version__)
    have = (int(found.group(1)), int(found.group(2))) if found else (0, 0)
    need = tuple(int(part) for part in TORCH_TARGET.split("."))
    if have < need:
        raise ImportError(
            f"sfvq_ext needs torch >= {TORCH_TARGET} but torch {_torch.__version__} is installed; "
            f"upgrade it with: pip install --upgrade 'torch>={TORCH_TARGET}'"
        )


_check_torch_version()


def _import_extension():
    """The compiled extension, or an ImportError that says where it is missing.
    Python started in a clone after a non-editable install imports the clone's
    sources, which hold no _C; Python's own message would blame a "circular import"."""
    import importlib.util

    if importlib.util.find_spec(f"{__name__}._C") is None:  # absent (a failing load raises its own error below)
        from pathlib import Path

        here = Path(__file__).resolve().parent
        if (here.parent / "pyproject.toml").is_file():
            raise ImportError(
                f"sfvq_ext was imported from the source tree {here}, which holds no compiled extension (_C): "
                "Python looks in the current directory first. Run it from another directory to use the "
                "installed package, or use the clone's own editable install (`bash setup.sh`, then "
                ".venv/bin/python)")
        raise ImportError(f"sfvq_ext at {here} has no compiled extension (_C): reinstall it (pip install sfvq_ext)")
    from . import _C

    return _C


_C = _import_extension()  # registers the op schemas and the CPU kernels


def _load_cuda_kernels() -> str | None:
    """Registers the CUDA kernels (the separate module _C_cuda) when this torch
    can run them; returns None then, else why they are not registered."""
    if not _C.cuda_built:
        return "this build of sfvq_ext has no CUDA kernels (built without nvcc, against a CPU-only torch, or with SFVQ_CUDA=OFF)"
    if _torch.version.cuda is None:
        return f"torch {_torch.__version__} is a CPU-only build"
    try:
        from . import _C_cuda  # noqa: F401
    except ImportError as error:
        return f"the CUDA kernels did not load under torch {_torch.__version__}: {error}"
    return None


_cuda_not_registered = _load_cuda_kernels()
from .ops import Projection, decode, dithered_quantize, expand, init_codebook, nearest, project
from .quantizer import SFVQ
from .checkpoint import load, save
from .fit import fit
from .interpret import directions

__version__ = "0.1.0"

__all__ = ["SFVQ", "fit", "save", "load", "directions", "Projection", "project", "nearest", "decode", "expand",
           "dithered_quantize", "init_codebook", "build_info", "TORCH_TARGET", "__version__"]
# The subpackages a user imports: `from sfvq_ext import adapters, interpret, reference`.
_SUBPACKAGES = ("adapters", "interpret", "reference", "demo", "explore")


def __dir__() -> list[str]:
    return sorted([*__all__, *_SUBPACKAGES])


def build_info() -> dict:
    """Facts about the compiled extension and the torch it runs with."""
    return {
        "sfvq_ext": __version__,
        "built_with_torch": _C.built_with_torch,
        "runs_on_torch": f">= {_C.torch_target} (LibTorch stable ABI)",
        "torch": _torch.__version__,
        # CUDA kernels registered (torch.ops.sfvq.* run on CUDA tensors), and if not, why.
        "cuda_kernels": _cuda_not_registered is None,
        "cuda_kernels_missing_because": _cuda_not_registered,
        "cuda_available": _torch.cuda.is_available(),
        "threads": _torch.get_num_threads(),
    }
