"""Bring your own probe: any callable ``images -> (n, F)`` named scores (an
attribute classifier, a regressor, CLIP similarities, ...) reads every edit, and
a table says which score each direction moves, how much, and how exclusively."""

from __future__ import annotations

import torch
from torch import Tensor


def call_probe(probe, images: Tensor) -> Tensor:
    """``probe(images)`` checked: a float ``(n, F)`` tensor of finite scores, returned
    as float64. Raises ``ValueError`` naming the probe's output otherwise."""
    scores = probe(images)
    if not isinstance(scores, Tensor) or scores.dim() != 2 or scores.shape[0] != len(images) \
            or not scores.is_floating_point():
        got = f"{scores.dtype} tensor of shape {tuple(scores.shape)}" if isinstance(scores, Tensor) \
            else type(scores).__name__
        raise ValueError(f"probe: must return float scores (n, F) for n = {len(images)} images, got {got}")
    if not torch.isfinite(scores).all():
        raise ValueError("probe: returned NaN or Inf scores")
    return scores.detach().double().cpu()
