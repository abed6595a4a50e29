"""Reading a fitted curve as a map of the latent space."""

from __future__ import annotations

import torch
from torch import Tensor


def directions(codebook: Tensor) -> Tensor:
    """Editing directions of the curve: row i is the unit vector from ``c_i`` to
    ``c_{i+1}`` (segment i), ``(K-1, D)``. A zero-length segment gives a zero row."""
    if not isinstance(codebook, Tensor) or codebook.dim() != 2 or codebook.shape[0] < 2:
        raise ValueError("directions: codebook must be a (K, D) tensor with K >= 2, got "
                         f"{tuple(codebook.shape) if isinstance(codebook, Tensor) else type(codebook).__name__}")
    d = (codebook[1:] - codebook[:-1]).detach()
    length = torch.linalg.vector_norm(d, dim=1, keepdim=True)
    return torch.where(length > 0, d / torch.where(length > 0, length, 1), 0)
