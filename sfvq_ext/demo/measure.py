"""How interpretable is an editing direction? Edit latents along it, render, and
let the factor probe say how much each known factor changed.

A direction that moves one factor alone is disentangled: its *dominance* (the
share of the total change that falls on the most-changed factor) is 1. A
method's score is the mean dominance of its most active directions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import world


def edit_step(latents: Tensor, fraction: float = 0.25) -> float:
    """One edit strength for every method: ``fraction`` of the RMS distance of the
    latents from their mean (directions are unit vectors)."""
    return fraction * (latents - latents.mean(0)).norm(dim=1).pow(2).mean().sqrt().item()


class FactorScores:
    """The factor probe as a bring-your-own probe (:func:`sfvq_ext.interpret.probe_table`):
    ``images -> (n, 10)`` scores, the three shape probabilities halved and the seven
    continuous factors in range units, with ``names`` and ``groups`` (the three
    halved probabilities form "shape": summed, their absolute changes are the
    total-variation distance of the shape prediction). Nothing about it is special
    to the tools: any probe with this interface is read the same way."""

    def __init__(self, probe):
        self.probe = probe
        self.names = [f"shape:{s}" for s in world.SHAPES] + list(world.CONTINUOUS)
        self.groups = {"shape": [f"shape:{s}" for s in world.SHAPES]}

    def __call__(self, images: Tensor) -> Tensor:
        probs, values = self.probe.read(images)
        return torch.cat([0.5 * probs, values], dim=1)


def factor_probe() -> FactorScores:
    """The shipped factor probe as a bring-your-own probe: the zero-argument factory the
    command line takes (``sfvq atlas RUN --probe sfvq_ext.demo.measure:factor_probe``)."""
    from . import load_probe

    return FactorScores(load_probe())


@torch.no_grad()
def factor_changes(adapter, probe, latents: Tensor, directions: Tensor, strength: float, *, layers=None,
                   batch_size: int = 64) -> Tensor:
    """Mean change of each factor when ``latents`` move by ``strength`` along each
    direction: ``(len(directions), 8)`` in :data:`world.FACTORS` order. Continuous
    factors in range units (0..1); shape as the total-variation distance of the
    probe's class probabilities (0..1). ``layers``: all (None), one selection, or one
    per direction. This is :func:`sfvq_ext.interpret.probe_table` with
    :class:`FactorScores`."""
    from ..interpret import probe_table

    table = probe_table(adapter, FactorScores(probe), latents, directions, strength, layers=layers,
                        batch_size=batch_size, progress=False)
    assert table.names == list(world.FACTORS)
    return table.changes.float()


@torch.no_grad()
def layer_factor_changes(adapter, probe, latents: Tensor, directions: Tensor, strength: float) -> Tensor:
    """Which W+ layers move which factor: ``(num_layers, 8)``, row l the mean over
    ``directions`` of :func:`factor_changes` when only layer l is edited
    (``benchmarks/layer_factors.py`` draws it)."""
    return torch.stack([factor_changes(adapter, probe, latents, directions, strength, layers=range(l, l + 1)).mean(0)
                        for l in range(adapter.num_layers)])


def dominance(changes: Tensor) -> Tensor:
    """Share of each direction's total factor change on its most-changed factor."""
    return changes.max(dim=1).values / changes.sum(dim=1).clamp_min(1e-12)


def method_score(changes: Tensor, top: int = 8) -> tuple[float, float]:
    """(mean dominance of the ``top`` directions with the largest total change, their mean total change)."""
    total = changes.sum(dim=1)
    chosen = total.argsort(descending=True)[:top]
    return dominance(changes[chosen]).mean().item(), total[chosen].mean().item()


def describe(changes_row: Tensor) -> str:
    """'hue (62%)': the most-changed factor and its share."""
    share = dominance(changes_row[None])[0].item()
    return f"{world.FACTORS[int(changes_row.argmax())]} ({share:.0%})"
