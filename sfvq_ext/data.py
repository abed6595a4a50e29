"""Where training vectors come from: a tensor, a ``.npy`` file, a directory of
``.npy`` shards (read memory-mapped, so the data may be larger than RAM), or a
sampler callable producing fresh vectors for every batch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

__all__ = ["VectorSource", "TensorSource", "NpyShards", "SamplerSource", "as_source", "draw"]

# A sampler is called as sampler(n, generator) and returns an (n, dim) float tensor;
# drawing from `generator` (a CPU torch.Generator) makes a fit reproducible.
Sampler = Callable[[int, torch.Generator], Tensor]


class VectorSource:
    """Rows of width ``dim``: finite sources have ``num_rows`` and :meth:`rows`;
    samplers (``num_rows is None``) have :meth:`sample`."""

    dim: int
    num_rows: int | None

    def rows(self, index: Tensor) -> Tensor:
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def describe(self) -> dict:
        """Facts that identify the data (recorded in checkpoints, checked on resume)."""
        raise NotImplementedError


def _check_width(dim: int, where: str) -> None:
    if dim < 1:
        raise ValueError(f"{where}: vectors must have at least one component, got width {dim}")


class TensorSource(VectorSource):
    def __init__(self, data: Tensor):
        if not data.is_floating_point():
            raise TypeError(f"source: a tensor source must be floating-point, got {data.dtype}")
        if data.dim() != 2:
            raise ValueError(f"source: a tensor source must have shape (N, dim), got {tuple(data.shape)}")
        if data.shape[0] == 0:
            raise ValueError("source: the tensor is empty (0 rows)")
        _check_width(data.shape[1], "source")
        self.data, self.dim, self.num_rows = data, data.shape[1], data.shape[0]

    def rows(self, index: Tensor) -> Tensor:
        return self.data.index_select(0, index.to(self.data.device))

    def describe(self) -> dict:
        return {"kind": "tensor", "rows": self.num_rows, "dim": self.dim}


class NpyShards(VectorSource):
    """One ``.npy`` file or a directory of them (``*.npy``, in name order), opened
    memory-mapped: only the rows of each batch are read."""

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        if path.is_dir():
            files = sorted(path.glob("*.npy"))
            if not files:
                raise ValueError(f"source: directory {path} holds no .npy files")
        elif path.is_file():
            files = [path]
        else:
            raise FileNotFoundError(f"source: {path} does not exist")
        self.paths, self.shards = files, []
        for f in files:
            try:
                arr = np.load(f, mmap_mode="r")
            except Exception as err:
                raise ValueError(f"source: cannot read {f} as a .npy array: {err}") from err
            if arr.ndim != 2 or arr.dtype.kind != "f":
                raise ValueError(f"source: {f} must hold a 2-D floating-point array (N, dim), "
                                 f"got shape {arr.shape} dtype {arr.dtype}")
            self.shards.append(arr)
        widths = {a.shape[1] for a in self.shards}
        if len(widths) != 1:
            raise ValueError(f"source: shards in {path} differ in width: {sorted(widths)}")
        self.dim = widths.pop()
        _check_width(self.dim, "source")
        self.offsets = np.cumsum([0] + [a.shape[0] for a in self.shards])
        self.num_rows = int(self.offsets[-1])
        if self.num_rows == 0:
            raise ValueError(f"source: {path} holds no rows")
        self.location = str(path)

    def rows(self, index: Tensor) -> Tensor:
        index = index.cpu().numpy()
        order = np.argsort(index, kind="stable")  # read each shard in file order
        wanted = index[order]
        out = np.empty((len(index), self.dim), dtype=np.float32)
        shard_of = np.searchsorted(self.offsets, wanted, side="right") - 1
        for s in np.unique(shard_of):
            pick = shard_of == s
            out[order[pick]] = self.shards[s][wanted[pick] - self.offsets[s]]
        return torch.from_numpy(out)

    def describe(self) -> dict:
        return {"kind": "npy", "rows": self.num_rows, "dim": self.dim, "files": len(self.paths),
                "path": self.location}


class SamplerSource(VectorSource):
    """Fresh vectors from ``sampler(n, generator)`` for every batch (e.g. a GAN's
    mapping network); ``dim`` is learnt from one call if not given."""

    num_rows = None

    def __init__(self, sampler: Sampler, dim: int | None = None):
        self.sampler = sampler
        if dim is None:
            dim = self.sample(2, torch.Generator().manual_seed(0)).shape[1]
        _check_width(dim, "source")
        self.dim = dim

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        out = self.sampler(n, generator)
        if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != n or not out.is_floating_point():
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"source: the sampler must return a float tensor of shape ({n}, dim) "
                             f"when called as sampler({n}, generator), got {got}")
        if getattr(self, "dim", None) is not None and out.shape[1] != self.dim:
            raise ValueError(f"source: the sampler returned width {out.shape[1]}, expected {self.dim}")
        return out

    def describe(self) -> dict:
        return {"kind": "sampler", "dim": self.dim}


def draw(source: VectorSource, n: int, generator: torch.Generator) -> Tensor:
    """``n`` vectors: fresh from a sampler, or up to ``n`` random rows of a finite
    source (read in file order)."""
    if source.num_rows is None:
        return source.sample(n, generator)
    return source.rows(torch.randperm(source.num_rows, generator=generator)[:n].sort().values)


def as_source(source) -> VectorSource:
    """A :class:`VectorSource` from a tensor / NumPy array, a path, a callable, or a source."""
    if isinstance(source, VectorSource):
        return source
    if isinstance(source, np.ndarray):
        source = torch.from_numpy(source)
    if isinstance(source, Tensor):
        return TensorSource(source)
    if isinstance(source, (str, os.PathLike)):
        return NpyShards(source)
    if callable(source):
        return SamplerSource(source)
    raise TypeError("source must be a tensor (N, dim), a .npy file or directory of .npy shards, "
                    f"or a sampler callable (n, generator) -> (n, dim); got {type(source).__name__}")
