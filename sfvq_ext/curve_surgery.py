"""Curve surgery between a fit's loss windows: stretches of the curve that no row uses
are moved, in order, onto the busiest segments (:func:`revive_unused`), and the used
pieces are visited in a shorter tour (:func:`shorten_bridges`). Both keep the order of
every used vertex and return the counts that go with the new curve."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["revive_unused", "shorten_bridges"]


@torch.no_grad()
def revive_unused(codebook: Tensor, counts: Tensor) -> tuple[Tensor, Tensor, int]:
    """Move the vertices of unused stretches of the curve onto its busiest segments,
    keeping the order of every other vertex.

    ``codebook`` ``(K, D)``; ``counts`` ``(K-1,)``: rows per segment over some period.
    A vertex is unused when neither segment beside it got a row. Those vertices are
    taken out (the curve then runs straight from the last used vertex to the next:
    nothing any row was quantized to changes), and the same number are put back
    on the remaining segments in proportion to their rows (largest remainders first),
    evenly spaced along each segment, so the curve's shape is unchanged there and
    each new vertex starts with rows to learn from. Returns the new codebook (same
    shape and dtype), its counts (a split segment's rows shared evenly by its parts;
    float64) and the number of vertices moved (0: ``codebook`` and ``counts`` themselves).
    Raises ``ValueError`` for mismatched shapes.
    """
    K = codebook.shape[0]
    if codebook.dim() != 2 or counts.shape != (K - 1,):
        raise ValueError(f"revive_unused: codebook must be (K, D) and counts (K-1,), got "
                         f"{tuple(codebook.shape)} and {tuple(counts.shape)}")
    counts_cpu = counts.cpu()
    used = counts_cpu > 0
    if not used.any():
        return codebook, counts, 0
    needed = torch.zeros(K, dtype=torch.bool)
    needed[:-1] |= used
    needed[1:] |= used
    keep = needed.nonzero().squeeze(1)
    moved = K - len(keep)
    if moved == 0:
        return codebook, counts, 0
    # rows of each remaining segment keep[a] -> keep[a+1] (sums of the segments it replaces)
    total = torch.cat([torch.zeros(1, dtype=torch.float64), counts_cpu.double().cumsum(0)])
    load = total[keep[1:]] - total[keep[:-1]]
    share = load * (moved / load.sum())
    extra = share.floor().long()
    short = moved - int(extra.sum())
    if short:  # largest remainders first (ties: the earlier segment)
        extra[torch.argsort(share - extra, descending=True, stable=True)[:short]] += 1
    pieces = extra + 1
    # segment a becomes `pieces[a]` equal parts: points at fractions 1/p, 2/p, ..., p/p
    seg = torch.repeat_interleave(torch.arange(len(pieces)), pieces)
    first = torch.cumsum(pieces, 0) - pieces
    frac = (torch.arange(len(seg)) - first[seg] + 1).double() / pieces[seg].double()
    c = codebook.detach().cpu().double()
    start, end = c[keep[seg]], c[keep[seg + 1]]
    points = start + frac[:, None] * (end - start)
    points[frac == 1] = end[frac == 1]  # the kept vertices themselves, exactly
    out = torch.cat([c[keep[:1]], points]).to(codebook)
    return out, (load / pieces)[seg], moved


@torch.no_grad()
def shorten_bridges(codebook: Tensor, counts: Tensor, max_moves: int = 10_000) -> tuple[Tensor, Tensor, int]:
    """Shorten the unused segments ("bridges") between the used pieces of the curve by
    reversing the stretch between two of them (2-opt), or the stretch before or after
    one, whenever that shortens the bridges: the curve then visits the same pieces,
    each still in its own order, in a shorter tour (no out-and-back excursions that
    a reversal can remove).

    Bridges are the segments with zero ``counts`` ``(K-1,)`` (run :func:`revive_unused`
    first, so each unused stretch is one segment). Every used segment stays a segment
    of the curve, so no row's nearest point on a used segment moves. Best move first,
    at most ``max_moves`` moves. Returns the reordered codebook ``(K, D)``, its counts,
    and the number of reversals (0: the inputs themselves).
    """
    K = codebook.shape[0]
    bridge = (counts.cpu() == 0).nonzero().squeeze(1)
    if len(bridge) == 0 or len(bridge) == K - 1:
        return codebook, counts, 0
    c = codebook.detach().cpu().double()
    order = torch.arange(K)
    counts = counts.cpu().double().clone()
    moves = 0
    while moves < max_moves:
        a, b = c[order[bridge]], c[order[bridge + 1]]  # each bridge runs a -> b
        length = (b - a).norm(dim=1)
        # reverse order[i+1 .. j] for bridges i < j: bridges a_i->b_i, a_j->b_j become a_i->a_j, b_i->b_j
        gain = length[:, None] + length[None, :] - torch.cdist(a, a) - torch.cdist(b, b)
        gain = gain.triu(diagonal=1)
        # reverse the start (order[0 .. i]) or the end (order[i+1 ..]): a_i->b_i becomes c_first->b_i / a_i->c_last
        first, last = c[order[0]], c[order[-1]]
        gain_start = length - (b - first).norm(dim=1)
        gain_end = length - (last - a).norm(dim=1)
        best = torch.stack([gain.max(), gain_start.max(), gain_end.max()])
        kind = int(best.argmax())
        if not best[kind] > 1e-9 * float(length.max()):
            break
        if kind == 0:
            i, j = divmod(int(gain.argmax()), len(bridge))
            lo, hi = int(bridge[i]) + 1, int(bridge[j])  # vertices lo..hi, segments lo..hi-1
        elif kind == 1:
            lo, hi = 0, int(bridge[int(gain_start.argmax())])
        else:
            lo, hi = int(bridge[int(gain_end.argmax())]) + 1, K - 1
        order[lo : hi + 1] = order[lo : hi + 1].flip(0)
        counts[lo:hi] = counts[lo:hi].flip(0)
        bridge = (counts == 0).nonzero().squeeze(1)
        moves += 1
    if moves == 0:
        return codebook, counts, 0
    return codebook[order.to(codebook.device)].clone(), counts, moves
