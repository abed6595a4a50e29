"""Public SFVQ operators: thin wrappers over the compiled ``torch.ops.sfvq`` ops,
plus their fake (meta) kernels so they trace under ``torch.compile``.

Argument checking happens in the compiled ops (so ``torch.ops.sfvq.*`` called
directly is checked too); errors name the offending argument. The compiled ops
raise ValueError (the stable ABI has no TypeError), so the wrappers here check
tensor-ness and dtypes first and raise TypeError for those.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from . import _C  # noqa: F401  (registers torch.ops.sfvq.*)

__all__ = ["Projection", "project", "nearest", "decode", "expand", "dithered_quantize", "init_codebook"]


class Projection(NamedTuple):
    """Result of :func:`project`, one entry per input vector."""

    point: Tensor  # (..., D) nearest point on the curve, dtype of x
    segment: Tensor  # (...) int64 segment index i in [0, K-2]
    t: Tensor  # (...) position on the segment in [0, 1]
    coord: Tensor  # (...) curve coordinate segment + t in [0, K-1]
    dist: Tensor  # (...) squared distance ||x - point||^2


_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _require_tensor(op: str, name: str, value) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(f"sfvq.{op}: {name} must be a torch.Tensor, got {type(value).__name__}")


def _require_float(op: str, name: str, value: Tensor) -> None:
    _require_tensor(op, name, value)
    if value.dtype not in _FLOATS:
        raise TypeError(
            f"sfvq.{op}: {name} must be a floating-point tensor (float16, bfloat16, float32 or float64), got {value.dtype}"
        )


def _require_pair(op: str, x: Tensor, table_name: str, table: Tensor) -> None:
    """x (..., D) against a (K, D) table: both floating, of one dtype (the type checks of the compiled op)."""
    _require_float(op, table_name, table)
    _require_float(op, "x", x)
    if x.dtype != table.dtype:
        raise TypeError(
            f"sfvq.{op}: x and {table_name} must have the same dtype, got x {x.dtype} and {table_name} {table.dtype}"
        )


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
    _require_pair("project", x, "codebook", codebook)
    return Projection(*_Project.apply(x, codebook, mode))


def nearest(x: Tensor, points: Tensor) -> tuple[Tensor, Tensor]:
    """Index of, and squared distance to, the nearest row of ``points`` ``(M, D)``
    for every vector of ``x`` ``(..., D)``. Ties resolve to the smallest index."""
    _require_tensor("nearest", "x", x)
    _require_tensor("nearest", "points", points)
    _require_pair("nearest", x, "points", points)
    return _Nearest.apply(x, points)


def decode(coord: Tensor, codebook: Tensor) -> Tensor:
    """Points on the curve at coordinates ``coord`` (any shape): ``(..., D)``.

    Coordinate ``u`` is clamped to ``[0, K-1]``; with ``j = min(floor(u), K-2)``
    and ``f = u - j`` the point is ``(1 - f) c_j + f c_{j+1}``.
    """
    _require_tensor("decode", "coord", coord)
    _require_tensor("decode", "codebook", codebook)
    _require_float("decode", "codebook", codebook)
    _require_float("decode", "coord", coord)
    return _Decode.apply(coord, codebook)


def expand(codebook: Tensor, eps: float = 0.01) -> Tensor:
    """Double the codebook ``(K, D) -> (2K, D)`` without changing the curve's shape.

    Old vertex ``j < K // 2`` becomes the points at coordinates ``j`` and ``j + eps``;
    ``j >= K // 2`` becomes ``j - eps`` and ``j``. Both ends stay where they are.
    """
    _require_float("expand", "codebook", codebook)
    return _Expand.apply(codebook, float(eps))


def dithered_quantize(x: Tensor, codebook: Tensor, dither: Tensor) -> tuple[Tensor, Tensor]:
    """The training step's quantizer: ``(quantized, segment)``.

    Segment ``i`` of the curve contributes one dithered point
    ``p_i = (1 - r_i) c_i + r_i c_{i+1}`` with ``r = dither`` ``(K-1,)`` (draw it from
    ``U[0, 1)`` once per step: it is shared by the batch); every row of ``x``
    ``(..., D)`` goes to its nearest ``p_i``. Gradients reach ``c_i`` and ``c_{i+1}``
    through ``quantized``; ``quantized`` does not depend on ``x`` (a hard assignment).
    """
    _require_tensor("dithered_quantize", "x", x)
    _require_tensor("dithered_quantize", "codebook", codebook)
    _require_tensor("dithered_quantize", "dither", dither)
    _require_pair("dithered_quantize", x, "codebook", codebook)
    if dither.dtype != codebook.dtype:
        raise TypeError(
            f"sfvq.dithered_quantize: dither must have the dtype of codebook ({codebook.dtype}), got {dither.dtype}"
        )
    return _DitheredQuantize.apply(x, codebook, dither)


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


@torch.library.register_fake("sfvq::dithered_quantize")
def _dithered_quantize_fake(x, codebook, dither):
    return x.new_empty(x.shape), x.new_empty(x.shape[:-1], dtype=torch.int64)


# ---------------------------------------------------------------------------
# Autograd. Each backward is written with aten ops only, so it traces under
# torch.compile; it computes in float32 (float64 for float64) and returns
# gradients in the dtype of the input they belong to.


def _compute_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _scatter_rows(K: int, rows: Tensor, values: Tensor) -> Tensor:
    """(K, D) tensor holding the sum of values[n] at row rows[n]."""
    # out of place: under vmap (torch.func.jacrev) values is batched and the zeros are not
    return torch.zeros(K, values.shape[-1], dtype=values.dtype, device=values.device).index_add(0, rows, values)


def _interpolation_grad(K: int, j: Tensor, f: Tensor, g: Tensor) -> Tensor:
    """Codebook gradient of points (1 - f) c_j + f c_{j+1} receiving gradients g (n, D)."""
    return _scatter_rows(K, j, (1 - f)[:, None] * g) + _scatter_rows(K, j + 1, f[:, None] * g)


def _project_setup(ctx, inputs, output):
    x, codebook, _mode = inputs
    _point, segment, t, _coord, _dist = output
    ctx.save_for_backward(x, codebook, segment, t)


def _project_backward(ctx, g_point, g_segment, g_t, g_coord, g_dist):
    """Derivatives of the winning segment's fit (the segment choice itself is
    piecewise constant). With c0, c1 the segment's ends, d = c1 - c0, L = |d|^2,
    t = <x - c0, d> / L clamped to [0, 1] and e = x - point:
      point = c0 + t d,  dist = |e|^2,  coord = segment + t,
      dt/dx = d / L, dt/dc0 = -((1 - t) d + e) / L, dt/dc1 = (e - t d) / L
    where 0 < t < 1 (t is constant where it is clamped or L = 0). d dist/dt
    = -2 <e, d> vanishes where t is free, so dist's gradient is 2e, -2(1-t)e, -2te."""
    x, codebook, segment, t = ctx.saved_tensors
    K, D = codebook.shape
    ct = _compute_dtype(x)
    xs = x.reshape(-1, D).to(ct)
    seg = segment.reshape(-1)
    c = codebook.to(ct)
    c0, c1 = c[seg], c[seg + 1]
    d = c1 - c0
    length2 = (d * d).sum(-1)
    tt = t.reshape(-1).to(ct)
    free = (tt > 0) & (tt < 1) & (length2 > 0)
    e = xs - (c0 + tt[:, None] * d)

    def flat(g, width=None):
        if g is None:
            return None
        return g.reshape(-1, width).to(ct) if width else g.reshape(-1).to(ct)

    gp, gt, gc, gd = flat(g_point, D), flat(g_t), flat(g_coord), flat(g_dist)
    # Total gradient reaching t, kept only where t is free.
    g_tot = torch.zeros_like(tt)
    if gt is not None:
        g_tot = g_tot + gt
    if gc is not None:
        g_tot = g_tot + gc
    if gp is not None:
        g_tot = g_tot + (gp * d).sum(-1)
    g_tot = torch.where(free, g_tot / torch.where(free, length2, 1), 0)[:, None]

    grad_x = g_tot * d
    grad_c0 = -g_tot * ((1 - tt)[:, None] * d + e)
    grad_c1 = g_tot * (e - tt[:, None] * d)
    if gp is not None:
        grad_c0 = grad_c0 + (1 - tt)[:, None] * gp
        grad_c1 = grad_c1 + tt[:, None] * gp
    if gd is not None:
        ge = 2 * gd[:, None] * e
        grad_x = grad_x + ge
        grad_c0 = grad_c0 - (1 - tt)[:, None] * ge
        grad_c1 = grad_c1 - tt[:, None] * ge
    grad_codebook = _scatter_rows(K, seg, grad_c0) + _scatter_rows(K, seg + 1, grad_c1)
    return grad_x.reshape(x.shape).to(x.dtype), grad_codebook.to(codebook.dtype), None


torch.library.register_autograd("sfvq::project", _project_backward, setup_context=_project_setup)


def _nearest_setup(ctx, inputs, output):
    x, points = inputs
    index, _dist = output
    ctx.save_for_backward(x, points, index)


def _nearest_backward(ctx, g_index, g_dist):
    """dist = |x - p_index|^2: 2 (x - p) to x, its negative to the chosen point."""
    x, points, index = ctx.saved_tensors
    M, D = points.shape
    ct = _compute_dtype(x)
    idx = index.reshape(-1)
    ge = 2 * g_dist.reshape(-1, 1).to(ct) * (x.reshape(-1, D).to(ct) - points.to(ct)[idx])
    return ge.reshape(x.shape).to(x.dtype), _scatter_rows(M, idx, -ge).to(points.dtype)


torch.library.register_autograd("sfvq::nearest", _nearest_backward, setup_context=_nearest_setup)


def _decode_parts(coord: Tensor, K: int, ct: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """Segment j, fraction f (in ``ct``) and the mask of coordinates inside [0, K-1]
    (where coord moves the point). The coordinate is split in float64, as the
    kernels do: the codebook's dtype must not round it."""
    u = coord.reshape(-1).double()
    inside = (u >= 0) & (u <= K - 1)
    uc = u.clamp(0, K - 1)
    j = uc.floor().long().clamp(max=K - 2)
    return j, (uc - j).to(ct), inside


def _decode_setup(ctx, inputs, output):
    coord, codebook = inputs
    ctx.save_for_backward(coord, codebook)


def _decode_backward(ctx, g_out):
    """out = (1 - f) c_j + f c_{j+1}: to the codebook by those weights; to the
    coordinate <g, c_{j+1} - c_j> inside [0, K-1] (zero where it is clamped)."""
    coord, codebook = ctx.saved_tensors
    K, D = codebook.shape
    ct = _compute_dtype(codebook)
    j, f, inside = _decode_parts(coord, K, ct)
    g = g_out.reshape(-1, D).to(ct)
    c = codebook.to(ct)
    grad_codebook = _interpolation_grad(K, j, f, g)
    grad_coord = torch.where(inside, (g * (c[j + 1] - c[j])).sum(-1), 0)
    return grad_coord.reshape(coord.shape).to(coord.dtype), grad_codebook.to(codebook.dtype)


torch.library.register_autograd("sfvq::decode", _decode_backward, setup_context=_decode_setup)


def _expand_coordinates(K: int, eps: float, like: Tensor) -> Tensor:
    """Curve coordinates of the 2K expanded vertices: j, j + eps below K/2; j - eps, j above."""
    j = torch.arange(K, dtype=like.dtype, device=like.device)
    low = j < K // 2
    first = torch.where(low, j, j - eps)
    second = torch.where(low, j + eps, j)
    return torch.stack([first, second], dim=1).reshape(-1)


def _expand_setup(ctx, inputs, output):
    codebook, eps = inputs
    ctx.eps = eps
    ctx.K = codebook.shape[0]
    ctx.codebook_dtype = codebook.dtype


def _expand_backward(ctx, g_out):
    """expand is decode at fixed coordinates: the codebook part of decode's backward."""
    ct = _compute_dtype(g_out)
    j, f, _ = _decode_parts(_expand_coordinates(ctx.K, ctx.eps, g_out.new_empty(0, dtype=torch.float64)), ctx.K, ct)
    return _interpolation_grad(ctx.K, j, f, g_out.to(ct)).to(ctx.codebook_dtype), None


torch.library.register_autograd("sfvq::expand", _expand_backward, setup_context=_expand_setup)


def _dithered_setup(ctx, inputs, output):
    x, codebook, dither = inputs
    _quantized, segment = output
    ctx.save_for_backward(codebook, dither, segment)


def _dithered_backward(ctx, g_quantized, g_segment):
    """To the codebook and the dither through the chosen dithered points (one
    registered op, python/ops_common.h); nothing reaches x (a hard assignment)."""
    codebook, dither, segment = ctx.saved_tensors
    grad_codebook, grad_dither = torch.ops.sfvq.dithered_quantize_backward(g_quantized, codebook, dither, segment)
    return None, grad_codebook, grad_dither


@torch.library.register_fake("sfvq::dithered_quantize_backward")
def _dithered_backward_fake(grad, codebook, dither, segment):
    return torch.empty_like(codebook), torch.empty_like(dither)


torch.library.register_autograd("sfvq::dithered_quantize", _dithered_backward, setup_context=_dithered_setup)


# ---------------------------------------------------------------------------
# The public functions above call these autograd.Functions rather than the ops'
# registered autograd: torch.library.register_autograd builds an old-style
# Function (no setup_context), which torch.func.grad / vjp / jacrev refuse.
# Same setup and backward as the registrations; generate_vmap_rule lets vmap run
# forward and backward through the ops' own batching.


def _function(name: str, forward, setup, backward) -> type:
    # forward is a plain function of the op's arguments (no ctx: setup_context takes it)
    return type(name, (torch.autograd.Function,), {
        "generate_vmap_rule": True,
        "forward": staticmethod(forward),
        "setup_context": staticmethod(setup),
        "backward": staticmethod(backward),
    })


def _project_forward(x, codebook, mode):
    return torch.ops.sfvq.project(x, codebook, mode)


def _nearest_forward(x, points):
    return torch.ops.sfvq.nearest(x, points)


def _decode_forward(coord, codebook):
    return torch.ops.sfvq.decode(coord, codebook)


def _expand_forward(codebook, eps):
    return torch.ops.sfvq.expand(codebook, eps)


def _dithered_forward(x, codebook, dither):
    return torch.ops.sfvq.dithered_quantize(x, codebook, dither)


# Named after their ops, so that an exporter that cannot translate one (ONNX) names the op.
_Project = _function("sfvq::project", _project_forward, _project_setup, _project_backward)
_Nearest = _function("sfvq::nearest", _nearest_forward, _nearest_setup, _nearest_backward)
_Decode = _function("sfvq::decode", _decode_forward, _decode_setup, _decode_backward)
_Expand = _function("sfvq::expand", _expand_forward, _expand_setup, _expand_backward)
_DitheredQuantize = _function("sfvq::dithered_quantize", _dithered_forward, _dithered_setup, _dithered_backward)
