"""Public SFVQ operators: thin wrappers over the compiled ``torch.ops.sfvq`` ops,
plus their fake (meta) kernels so they trace under ``torch.compile``.

Argument checking happens in the compiled ops (so ``torch.ops.sfvq.*`` called
directly is checked too); errors name the offending argument.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from . import _C  # noqa: F401  (registers torch.ops.sfvq.*)

__all__ = ["Projection", "project", "nearest", "decode", "expand", "init_codebook"]


class Projection(NamedTuple):
    """Result of :func:`project`, one entry per input vector."""

    point: Tensor  # (..., D) nearest point on the curve, dtype of x
    segment: Tensor  # (...) int64 segment index i in [0, K-2]
    t: Tensor  # (...) position on the segment in [0, 1]
    coord: Tensor  # (...) curve coordinate segment + t in [0, K-1]
    dist: Tensor  # (...) squared distance ||x - point||^2


def _require_tensor(op: str, name: str, value) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(f"sfvq.{op}: {name} must be a torch.Tensor, got {type(value).__name__}")


def project(x: Tensor, codebook: Tensor, mode: str = "exact") -> Projection:
    """Project ``x`` of shape ``(..., D)`` onto the curve through ``codebook`` ``(K, D)``.

    ``mode="exact"`` (default) returns the true nearest point over all K-1
    segments; ``mode="vertex"`` applies the original SFVQ authors' rule
    (nearest vertex j, moved into [1, K-2], then the better of segments j-1
    and j), for parity with published numbers. Ties resolve to the smallest
    segment index. ``t``, ``coord`` and ``dist`` are float32 (float64 for
    float64 input). A row of ``x`` holding NaN or Inf raises ``ValueError``.
    """
    _require_tensor("project", "x", x)
    _require_tensor("project", "codebook", codebook)
    return Projection(*torch.ops.sfvq.project(x, codebook, mode))


def nearest(x: Tensor, points: Tensor) -> tuple[Tensor, Tensor]:
    """Index of, and squared distance to, the nearest row of ``points`` ``(M, D)``
    for every vector of ``x`` ``(..., D)``. Ties resolve to the smallest index."""
    _require_tensor("nearest", "x", x)
    _require_tensor("nearest", "points", points)
    return torch.ops.sfvq.nearest(x, points)


def decode(coord: Tensor, codebook: Tensor) -> Tensor:
    """Points on the curve at coordinates ``coord`` (any shape): ``(..., D)``.

    Coordinate ``u`` is clamped to ``[0, K-1]``; with ``j = min(floor(u), K-2)``
    and ``f = u - j`` the point is ``(1 - f) c_j + f c_{j+1}``.
    """
    _require_tensor("decode", "coord", coord)
    _require_tensor("decode", "codebook", codebook)
    return torch.ops.sfvq.decode(coord, codebook)


def expand(codebook: Tensor, eps: float = 0.01) -> Tensor:
    """Double the codebook ``(K, D) -> (2K, D)`` without changing the curve's shape.

    Old vertex ``j < K // 2`` becomes the points at coordinates ``j`` and ``j + eps``;
    ``j >= K // 2`` becomes ``j - eps`` and ``j``. Both ends stay where they are.
    """
    _require_tensor("expand", "codebook", codebook)
    return torch.ops.sfvq.expand(codebook, float(eps))


def init_codebook(sample: Tensor) -> Tensor:
    """The 4-vector starting curve: sort ``sample`` ``(n, D)`` by L2 norm, cut it
    into four parts of ``n // 4`` vectors (the ``n % 4`` largest are left out, as
    in the authors' code) and return the mean of each part, ``(4, D)``.

    Vertices ordered by norm keep the starting curve inside the distribution.
    """
    _require_tensor("init_codebook", "sample", sample)
    if not sample.is_floating_point():
        raise TypeError(f"sfvq.init_codebook: sample must be a floating-point tensor, got {sample.dtype}")
    if sample.dim() != 2 or sample.shape[0] < 4:
        raise ValueError(f"sfvq.init_codebook: sample must have shape (n, D) with n >= 4, got {tuple(sample.shape)}")
    if not torch.isfinite(sample).all():
        raise ValueError("sfvq.init_codebook: sample contains NaN or Inf")
    part = sample.shape[0] // 4
    order = torch.argsort(torch.linalg.vector_norm(sample.float(), dim=1), stable=True)
    parts = sample[order[: 4 * part]].reshape(4, part, -1)
    return parts.mean(dim=1, dtype=torch.float64 if sample.dtype == torch.float64 else torch.float32).to(sample.dtype)


# ---------------------------------------------------------------------------
# Fake kernels: output shapes and dtypes only, for torch.compile / FakeTensor.


def _scalar_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


@torch.library.register_fake("sfvq::project")
def _project_fake(x, codebook, mode="exact"):
    lead = x.shape[:-1]
    sdt = _scalar_dtype(x)
    return (
        x.new_empty((*lead, codebook.shape[1])),
        x.new_empty(lead, dtype=torch.int64),
        x.new_empty(lead, dtype=sdt),
        x.new_empty(lead, dtype=sdt),
        x.new_empty(lead, dtype=sdt),
    )


@torch.library.register_fake("sfvq::nearest")
def _nearest_fake(x, points):
    lead = x.shape[:-1]
    return x.new_empty(lead, dtype=torch.int64), x.new_empty(lead, dtype=_scalar_dtype(x))


@torch.library.register_fake("sfvq::decode")
def _decode_fake(coord, codebook):
    return codebook.new_empty((*coord.shape, codebook.shape[1]))


@torch.library.register_fake("sfvq::expand")
def _expand_fake(codebook, eps=0.01):
    return codebook.new_empty((2 * codebook.shape[0], codebook.shape[1]))
