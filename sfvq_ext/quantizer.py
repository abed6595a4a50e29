"""The SFVQ quantizer as an ``nn.Module`` to drop into a model."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from . import ops

GRADIENT_MODES = ("nsvq", "straight_through", "none")


class SFVQ(nn.Module):
    """Space-filling vector quantizer: an ordered codebook read as a curve.

    ``forward(x)`` takes ``(..., dim)`` and returns ``(quantized, indices, loss)``:

    * train mode: each row goes to the nearest *dithered* point (one random point
      per segment, shared by the batch); ``indices`` are those segments;
    * eval mode: the exact nearest point on the curve; ``indices`` are its segments;
    * ``loss`` is the mean squared quantization error ``mean((x - q)^2)``,
      differentiable in the codebook (and in ``x``).

    How gradients reach ``x`` through ``quantized`` (``gradient=``):

    * ``"nsvq"`` (default, for use inside a model): in training, noise
      substitution ``x + (|x - q| / |v|) v`` with ``v ~ N(0, I)``: the output
      carries the quantization error's size, the codebook learns from the
      downstream loss, and the gradient is finite even where ``x == q``;
    * ``"straight_through"``: ``x + (q - x).detach()``; add ``loss`` to train the codebook;
    * ``"none"``: ``quantized`` is ``q`` itself (training SFVQ alone on ``loss``).

    In eval mode ``"nsvq"`` and ``"none"`` return the exact point ``q``, whose
    gradient to ``x`` is the projection onto its segment.

    The codebook grows by doubling: it starts at ``2**start_bits`` vectors when
    initialised (from the first training batch, or :meth:`initialize`), and
    :meth:`expand` doubles it up to ``2**bits``. Storage for all ``2**bits`` rows
    is allocated up front (``weight``), so the parameter, an optimizer's state and
    ``DistributedDataParallel`` keep working across expansions; ``codebook`` is the
    part in use. Inputs of any float dtype are quantized against the codebook's
    dtype (float32 by default, also under autocast) and returned in their own dtype.
    """

    def __init__(self, dim: int, bits: int, *, gradient: str = "nsvq", start_bits: int = 2,
                 expand_eps: float = 0.01, device=None, dtype=None):
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"SFVQ: dim must be a positive int, got {dim!r}")
        if not isinstance(bits, int) or not 2 <= bits <= 24:
            raise ValueError(f"SFVQ: bits must be an int in [2, 24] (a curve of 2**bits vectors), got {bits!r}")
        if not isinstance(start_bits, int) or not 2 <= start_bits <= bits:
            raise ValueError(f"SFVQ: start_bits must be an int in [2, bits={bits}], got {start_bits!r}")
        if gradient not in GRADIENT_MODES:
            raise ValueError(f"SFVQ: gradient must be one of {GRADIENT_MODES}, got {gradient!r}")
        if not 0 < expand_eps < 0.5:
            raise ValueError(f"SFVQ: expand_eps must be in (0, 0.5), got {expand_eps!r}")
        self.dim, self.bits, self.start_bits = dim, bits, start_bits
        self.gradient, self.expand_eps = gradient, float(expand_eps)
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.zeros(2**bits, dim, **factory))
        self.register_buffer("segment_counts", torch.zeros(2**bits - 1, dtype=torch.int64, device=device))
        self._size = 2**start_bits  # codebook rows in use
        self._initialized = False
        # Optional torch.Generator (on CPU) for the dither and NSVQ noise; None: the global RNG.
        self.generator: torch.Generator | None = None
        # Per-stage records of sfvq_ext.fit (loss, perplexity, ...); saved with the curve.
        self.history: list[dict] = []

    # -- state -------------------------------------------------------------

    @property
    def codebook(self) -> Tensor:
        """The curve in use, ``(codebook_size, dim)``: a view of ``weight``."""
        return self.weight[: self._size]

    @property
    def codebook_size(self) -> int:
        return self._size

    @property
    def current_bits(self) -> int:
        return self._size.bit_length() - 1

    @property
    def initialized(self) -> bool:
        return self._initialized

    @property
    def segment_usage(self) -> Tensor:
        """Training hits per segment since the last :meth:`reset_usage` (or expansion), ``(codebook_size - 1,)``."""
        return self.segment_counts[: self._size - 1]

    @property
    def perplexity(self) -> float:
        """``exp(entropy)`` of :attr:`segment_usage`: the effective number of segments in use (nan before any hit)."""
        counts = self.segment_usage.double()
        total = counts.sum()
        if total == 0:
            return math.nan
        p = counts[counts > 0] / total
        return math.exp(-(p * p.log()).sum().item())

    def reset_usage(self) -> None:
        self.segment_counts.zero_()

    def get_extra_state(self) -> dict:
        return {"size": self._size, "initialized": self._initialized}

    def set_extra_state(self, state: dict) -> None:
        size = int(state["size"])
        if size < 4 or size > 2**self.bits or size & (size - 1):
            raise ValueError(f"SFVQ: state holds a codebook size of {size}, expected a power of two in [4, {2**self.bits}]")
        self._size, self._initialized = size, bool(state["initialized"])

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, bits={self.bits}, codebook_size={self._size}, gradient={self.gradient!r}"
                + ("" if self._initialized else ", uninitialized"))

    # -- growth ------------------------------------------------------------

    @torch.compiler.disable
    @torch.no_grad()
    def initialize(self, sample: Tensor) -> None:
        """Set the starting curve from ``sample`` ``(n, dim)``, n >= 4: the norm-quartile
        means (:func:`sfvq_ext.init_codebook`), expanded to ``2**start_bits`` vectors.
        Under ``torch.distributed`` rank 0's curve is broadcast so all ranks agree."""
        if not isinstance(sample, Tensor) or not sample.is_floating_point():
            raise TypeError(f"SFVQ.initialize: sample must be a floating-point tensor, got {type(sample).__name__}")
        if sample.shape[-1] != self.dim:
            raise ValueError(f"SFVQ.initialize: sample must have shape (n, {self.dim}), got {tuple(sample.shape)}")
        codebook = ops.init_codebook(sample.reshape(-1, self.dim).to(self.weight.dtype))
        while codebook.shape[0] < 2**self.start_bits:
            codebook = ops.expand(codebook, self.expand_eps)
        self.weight.zero_()
        self.weight[: codebook.shape[0]] = codebook.to(self.weight.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.broadcast(self.weight, src=0)
        self._size = codebook.shape[0]
        self._initialized = True
        self.reset_usage()

    @torch.no_grad()
    def expand(self, eps: float | None = None) -> None:
        """Double the codebook without changing the curve's shape (:func:`sfvq_ext.expand`).
        Resets the usage counts. Optimizer state for ``weight`` keeps its shape but
        belongs to the old vertices: start a fresh optimizer after expanding."""
        if not self._initialized:
            raise RuntimeError("SFVQ.expand: the codebook is not initialised yet (train on a batch or call initialize)")
        if self._size >= 2**self.bits:
            raise ValueError(f"SFVQ.expand: the codebook already has its full size 2**bits = {2**self.bits}")
        grown = ops.expand(self.codebook, self.expand_eps if eps is None else eps)
        self.weight[: grown.shape[0]] = grown
        self._size = grown.shape[0]
        self.reset_usage()

    # -- quantization ------------------------------------------------------

    def _check_input(self, x: Tensor, where: str, need_codebook: bool = True) -> None:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"SFVQ.{where}: x must be a floating-point tensor, got "
                            f"{x.dtype if isinstance(x, Tensor) else type(x).__name__}")
        if x.dim() < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"SFVQ.{where}: x must have shape (..., {self.dim}), got {tuple(x.shape)}")
        if need_codebook and not self._initialized:
            raise RuntimeError(f"SFVQ.{where}: the codebook is not initialised "
                               "(train on a batch, call initialize(sample), or load a fitted curve)")

    def _random(self, shape, like: Tensor, normal: bool) -> Tensor:
        if self.generator is None:
            return (torch.randn if normal else torch.rand)(shape, device=like.device, dtype=like.dtype)
        draw = (torch.randn if normal else torch.rand)(shape, generator=self.generator, dtype=like.dtype)
        return draw.to(like.device)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        self._check_input(x, "forward", need_codebook=not self.training)
        if not self._initialized:  # training on the first batch: start the curve from it
            self.initialize(x.detach().reshape(-1, self.dim))
        codebook = self.codebook
        xf = x.to(codebook.dtype)
        if self.training:
            dither = self._random(codebook.shape[0] - 1, codebook, normal=False)
            q, indices = ops.dithered_quantize(xf, codebook, dither)
            with torch.no_grad():
                self.segment_counts.index_add_(0, indices.reshape(-1), torch.ones_like(indices.reshape(-1)))
        else:
            projection = ops.project(xf, codebook)
            q, indices = projection.point, projection.segment
        loss = (xf - q).square().mean()
        if self.gradient == "straight_through":
            out = xf + (q - xf).detach()
        elif self.gradient == "nsvq" and self.training:
            noise = self._random(xf.shape, xf, normal=True)
            # vector_norm's gradient at 0 is 0, so x == q gives a finite gradient
            scale = torch.linalg.vector_norm(xf - q, dim=-1, keepdim=True) / torch.linalg.vector_norm(noise, dim=-1, keepdim=True)
            out = xf + scale * noise
        else:
            out = q
        return out.to(x.dtype), indices, loss

    def project(self, x: Tensor, mode: str = "exact") -> ops.Projection:
        """Exact nearest points on the curve (:func:`sfvq_ext.project`): point, segment, t, coord, dist."""
        self._check_input(x, "project")
        return ops.project(x.to(self.weight.dtype), self.codebook, mode)

    def decode(self, coord: Tensor) -> Tensor:
        """Points at curve coordinates ``coord`` (:func:`sfvq_ext.decode`)."""
        if not self._initialized:
            raise RuntimeError("SFVQ.decode: the codebook is not initialised")
        return ops.decode(coord, self.codebook)
