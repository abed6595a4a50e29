"""The bottom of the interpretation layer: editing directions and the curve's geometry.

A fitted curve's segments are its editing directions (:func:`directions`); their
lengths tell ordinary segments from the long "jumps" that bridge two regions of the
latent space (:func:`jump_segments`)."""

from __future__ import annotations

import torch
from torch import Tensor

DEFAULT_JUMP_FACTOR = 3.0


def directions(codebook: Tensor) -> Tensor:
    """Editing directions of the curve: row i is the unit vector from ``c_i`` to
    ``c_{i+1}`` (segment i), ``(K-1, D)``, in the codebook's dtype promoted to at least
    float32. A zero-length segment gives a zero row."""
    if not isinstance(codebook, Tensor) or codebook.dim() != 2 or codebook.shape[0] < 2:
        raise ValueError("directions: codebook must be a (K, D) tensor with K >= 2, got "
                         f"{tuple(codebook.shape) if isinstance(codebook, Tensor) else type(codebook).__name__}")
    codebook = codebook.detach()
    codebook = codebook.to(torch.promote_types(codebook.dtype, torch.float32))  # bf16 differences would round
    d = codebook[1:] - codebook[:-1]
    length = torch.linalg.vector_norm(d, dim=1, keepdim=True)
    return torch.where(length > 0, d / torch.where(length > 0, length, 1), 0)


def check_directions(directions: Tensor, latent_dim: int, where: str) -> Tensor:
    """``directions`` as ``(M, latent_dim)`` (one direction ``(latent_dim,)`` becomes one row),
    detached; ``ValueError`` naming ``where`` for a wrong shape, dtype or NaN/Inf."""
    if not isinstance(directions, Tensor) or not directions.is_floating_point():
        raise ValueError(f"{where}: directions must be a floating-point tensor (M, {latent_dim}) or ({latent_dim},)")
    if directions.dim() == 1:
        directions = directions[None]
    if directions.dim() != 2 or directions.shape[1] != latent_dim:
        raise ValueError(f"{where}: directions must have shape (M, {latent_dim}) or ({latent_dim},), "
                         f"got {tuple(directions.shape)}")
    if not torch.isfinite(directions).all():
        raise ValueError(f"{where}: directions contain NaN or Inf")
    return directions.detach()


def segment_lengths(codebook: Tensor) -> Tensor:
    """``||c_{i+1} - c_i||`` for every segment, float64 ``(K-1,)``."""
    if not isinstance(codebook, Tensor) or codebook.dim() != 2 or codebook.shape[0] < 2 \
            or not codebook.is_floating_point():
        got = tuple(codebook.shape) if isinstance(codebook, Tensor) else type(codebook).__name__
        raise ValueError(f"codebook must be a floating-point (K, D) tensor with K >= 2, got {got}")
    c = codebook.detach().double()
    return (c[1:] - c[:-1]).norm(dim=1).cpu()


def jump_segments(codebook: Tensor, factor: float = DEFAULT_JUMP_FACTOR) -> Tensor:
    """Segments that jump: longer than ``factor`` times the median segment length
    (bool ``(K-1,)``). A trained curve's segments join neighbouring codebook vectors;
    one much longer than the rest crosses between regions of the latent space (it
    bridges two clusters, through where the data is thin), so its direction is the
    difference between two regions, not an edit. Raises ``ValueError`` for a bad
    codebook or a factor <= 1."""
    if not factor > 1:
        raise ValueError(f"jump_segments: factor must be > 1, got {factor}")
    lengths = segment_lengths(codebook)
    return lengths > factor * lengths.median()
