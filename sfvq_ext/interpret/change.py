"""The bottom of the interpretation layer: how much an edit changes an image, measured
on pixels (:func:`image_change`) or read by a probe (:func:`probe_change`; a probe is
any callable ``images -> (n, F)`` scores, checked by :func:`call_probe`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def image_change(before: Tensor, after: Tensor, *, min_size: int = 8) -> Tensor:
    """Multi-scale pixel change between two batches of images, one number per image.

    ``before``, ``after``: float ``(n, 3, H, W)`` in ``[-1, 1]`` (an adapter's
    renders), the same shape. Returns float64 ``(n,)``: the mean, over the levels of
    an image pyramid (full size, then 2x2 average-pooled again and again while the
    side stays >= ``min_size``; one level when the image is already smaller), of the
    RMS difference of the two images at that level, in pixel units of the [-1, 1]
    range (0 = identical, 2 = black vs white everywhere). Coarse levels weigh what
    moves large areas (position, shape, colour), the full level fine detail; no
    network weights, nothing to download. Raises ``ValueError`` for mismatched or
    malformed inputs."""
    for name, value in (("before", before), ("after", after)):
        if not isinstance(value, Tensor) or value.dim() != 4 or not value.is_floating_point():
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"image_change: {name} must be a float (n, C, H, W) tensor, got {got}")
    if before.shape != after.shape:
        raise ValueError(f"image_change: before and after differ in shape: {tuple(before.shape)} vs {tuple(after.shape)}")
    if min_size < 1:
        raise ValueError(f"image_change: min_size must be positive, got {min_size}")
    a, b = before.double(), after.double()
    levels = []
    while True:
        levels.append((a - b).pow(2).flatten(1).mean(1).sqrt())
        if min(a.shape[-2:]) // 2 < min_size:
            break
        a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
    return torch.stack(levels).mean(0)


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


def probe_names(probe, count: int, names=None) -> list[str]:
    """The names of a probe's ``count`` scores: ``names``, else ``probe.names``, else
    ``score 0``, ``score 1``, ... Raises ``ValueError`` when their number is wrong."""
    names = names if names is not None else getattr(probe, "names", None)
    if names is None:
        return [f"score {i}" for i in range(count)]
    names = [str(n) for n in names]
    if len(names) != count or len(set(names)) != count:
        raise ValueError(f"probe names: need {count} distinct names for the probe's {count} scores, got {names}")
    return names


def probe_change(probe, before: Tensor, after: Tensor) -> Tensor:
    """Image change read by a probe (any callable ``images -> (n, F)`` scores):
    per image the sum over the F scores of ``|probe(after) - probe(before)|``,
    float64 ``(n,)``, in the scores' own units."""
    return (call_probe(probe, after) - call_probe(probe, before)).abs().sum(1)
