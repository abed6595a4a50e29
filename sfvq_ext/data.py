"""Where training vectors come from: a tensor, a ``.npy`` file, a directory of
``.npy`` shards (read memory-mapped, so the data may be larger than RAM), or a
sampler callable producing fresh vectors for every batch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

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

    def locate(self, row: int) -> str:
        """Where row ``row`` of a finite source is, in words (for error messages)."""
        return f"row {row} of the source"


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
    memory-mapped: only the rows of each batch are read. Every file must hold a 2-D
    floating-point array (rows, dim), all of the same width; a shard may have 0 rows,
    the whole set may not. ``name`` starts every error message (the argument that
    named ``path``)."""

    def __init__(self, path: str | os.PathLike, name: str = "source"):
        path = Path(path)
        if path.is_dir():
            files = sorted(path.glob("*.npy"))
            if not files:
                raise ValueError(f"{name}: directory {path} holds no .npy files")
        elif path.is_file():
            files = [path]
        else:
            raise FileNotFoundError(f"{name}: {path} does not exist")
        self.paths, self.shards = files, []
        for f in files:
            try:
                arr = np.load(f, mmap_mode="r")
            except Exception as err:
                raise ValueError(f"{name}: cannot read {f} as a .npy array: {err}") from err
            if not isinstance(arr, np.ndarray):  # np.load opened an .npz archive
                raise ValueError(f"{name}: {f} is not a single .npy array (an .npz archive?); "
                                 "save one array with np.save")
            if arr.ndim != 2 or arr.dtype.kind != "f":
                raise ValueError(f"{name}: {f} must hold a 2-D floating-point array (N, dim), "
                                 f"got shape {arr.shape} dtype {arr.dtype}")
            if self.shards and arr.shape[1] != self.shards[0].shape[1]:
                raise ValueError(f"{name}: shards in {path} differ in width: {files[0].name} has "
                                 f"{self.shards[0].shape[1]}, {f.name} has {arr.shape[1]}")
            self.shards.append(arr)
        self.dim = self.shards[0].shape[1]
        _check_width(self.dim, name)
        self.offsets = np.cumsum([0] + [a.shape[0] for a in self.shards])
        self.num_rows = int(self.offsets[-1])
        if self.num_rows == 0:
            raise ValueError(f"{name}: {path} holds no rows")
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

    def blocks(self, rows: int, shards: Iterable[int] | None = None) -> Iterator[tuple[int, int, np.ndarray]]:
        """The rows of ``shards`` (indices into :attr:`paths`; default all, in name order),
        read ``rows`` at a time: ``(shard index, first row in that file, (n, dim) float32
        array)`` with 1 <= n <= rows. Raises ValueError naming the file and its row when a
        row holds NaN or Inf, or values float32 cannot hold."""
        if rows < 1:
            raise ValueError(f"blocks: rows must be positive, got {rows}")
        for s in range(len(self.shards)) if shards is None else shards:
            stored = self.shards[s]
            for first in range(0, stored.shape[0], rows):
                block = np.asarray(stored[first : first + rows])
                with np.errstate(over="ignore"):  # too-large values are reported just below
                    out = block.astype(np.float32)
                bad = ~np.isfinite(out).all(axis=1)
                if bad.any():
                    row = int(bad.argmax())
                    what = ("holds NaN or Inf" if not np.isfinite(block[row]).all()
                            else "has values beyond float32's range")
                    raise ValueError(f"{self.paths[s]}: row {first + row} {what}; remove or rescale it first")
                yield s, first, out

    def describe(self) -> dict:
        return {"kind": "npy", "rows": self.num_rows, "dim": self.dim, "files": len(self.paths),
                "path": self.location}

    def locate(self, row: int) -> str:
        s = int(np.searchsorted(self.offsets, row, side="right")) - 1
        return f"{self.paths[s]} row {row - int(self.offsets[s])}"


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


def draw(source: VectorSource, n: int, generator: torch.Generator, *, return_index: bool = False):
    """``n`` vectors: fresh from a sampler, or up to ``n`` random rows of a finite
    source (read in file order). With ``return_index``, also the source rows drawn
    (int64; ``None`` for a sampler)."""
    if source.num_rows is None:
        x, index = source.sample(n, generator), None
    else:
        index = torch.randperm(source.num_rows, generator=generator)[:n].sort().values
        x = source.rows(index)
    return (x, index) if return_index else x


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
