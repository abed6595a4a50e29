"""Bring your own probe: any callable ``images -> (n, F)`` named scores (an
attribute classifier, a regressor, CLIP similarities, ...) reads every edit, and
a table says which score each direction moves, how much, and how exclusively."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .change import call_probe, probe_names
from .directions import check_directions


@dataclass
class ProbeTable:
    """Which named score each direction moves, how much, and how exclusively.

    ``changes``: float64 ``(M, G)``: for direction m and score (or group) g, the mean
    over the latents of ``|score(edited image) - score(image)|`` (a group: the sum
    over its scores); ``names``: the G score/group names; ``labels``: one per
    direction. ``total`` (M,): the row sums; ``exclusivity`` (M,): the share of the
    row on its largest entry (1 = one score alone; 1/G = spread evenly; 0 where
    nothing moved); ``top``: the name of that entry."""

    changes: Tensor
    names: list[str]
    labels: list[str]

    @property
    def total(self) -> Tensor:
        return self.changes.sum(1)

    @property
    def exclusivity(self) -> Tensor:
        total = self.total
        return torch.where(total > 0, self.changes.max(1).values / total.clamp_min(1e-300), 0.0)

    @property
    def top(self) -> list[str]:
        return [self.names[int(i)] for i in self.changes.argmax(1)]

    def rows(self) -> list[dict]:
        """One dict per direction: label, top, exclusivity, total and every named change."""
        return [{"label": label, "top": top, "exclusivity": float(x), "total": float(t),
                 "changes": dict(zip(self.names, map(float, row)))}
                for label, top, x, t, row in zip(self.labels, self.top, self.exclusivity, self.total, self.changes)]

    def to_markdown(self, digits: int = 3) -> str:
        head = "| direction | moves most | exclusivity | total | " + " | ".join(self.names) + " |"
        lines = [head, "|---" * (4 + len(self.names)) + "|"]
        for r in self.rows():
            lines.append(f"| {r['label']} | {r['top']} | {r['exclusivity']:.0%} | {r['total']:.{digits}f} | "
                         + " | ".join(f"{v:.{digits}f}" for v in r["changes"].values()) + " |")
        return "\n".join(lines)


def _group_matrix(names: list[str], groups) -> tuple[Tensor, list[str]]:
    """(F, G) 0/1 matrix summing scores into groups, and the group names: each group in
    ``groups`` (name -> score names) where its first score stands, ungrouped scores alone."""
    if not groups:
        return torch.eye(len(names), dtype=torch.float64), list(names)
    owner = {}
    for group, members in groups.items():
        for m in members:
            if m not in names:
                raise ValueError(f"probe groups: group {group!r} names {m!r}, which is not one of the scores {names}")
            if m in owner:
                raise ValueError(f"probe groups: score {m!r} is in two groups ({owner[m]!r}, {group!r})")
            owner[m] = str(group)
    out: list[str] = []
    for n in names:
        g = owner.get(n, n)
        if g not in out:
            out.append(g)
    matrix = torch.zeros(len(names), len(out), dtype=torch.float64)
    for i, n in enumerate(names):
        matrix[i, out.index(owner.get(n, n))] = 1
    return matrix, out


@torch.no_grad()
def probe_table(adapter, probe, latents: Tensor, directions: Tensor, strength: float, *, layers=None,
                names=None, groups=None, labels=None, batch_size: int = 64, progress: bool = True) -> ProbeTable:
    """Read every direction's edit with your own probe.

    ``probe``: any callable ``images (n, 3, H, W) in [-1, 1] -> (n, F)`` float scores
    (an attribute classifier's probabilities, a regressor, ...); its score names come
    from ``names``, else ``probe.names``, else ``score i``. ``groups`` (optional,
    else ``probe.groups``): ``{group: [score names]}`` whose changes are summed into
    one column (e.g. a classifier's class probabilities halved: the group is then
    the total-variation distance of its prediction). ``latents``: ``(n,
    latent_dim)``; ``directions``: ``(M, latent_dim)``; each direction moves every
    latent by ``strength`` (latent units), on ``layers``: ``None`` (all), one
    selection for all directions, or a list with one selection per direction (e.g.
    each one's suggested range). ``labels``: names of the directions (default
    ``0..M-1``). ``n * (M + 1)`` renders in batches of ``batch_size``, one progress
    bar. Returns a :class:`ProbeTable`. Raises ``ValueError`` for a probe whose
    output is not ``(n, F)`` finite floats, wrong names, groups or labels."""
    directions = check_directions(directions, adapter.latent_dim, "probe_table")
    M = len(directions)
    if isinstance(layers, list) and len(layers) == M and all(l is None or not isinstance(l, int) for l in layers):
        per_direction = layers
    else:
        per_direction = [layers] * M
    labels = [str(i) for i in range(M)] if labels is None else [str(x) for x in labels]
    if len(labels) != M:
        raise ValueError(f"probe_table: labels must name the {M} directions, got {len(labels)}")
    base = call_probe(probe, adapter.render(latents, batch_size=batch_size, progress=False))
    names = probe_names(probe, base.shape[1], names)
    matrix, group_names = _group_matrix(names, groups if groups is not None else getattr(probe, "groups", None))
    rows = []
    for d, selection in tqdm(list(zip(directions, per_direction)), desc="probe table", unit="direction",
                             disable=not progress):
        edited = adapter.apply_direction(latents, d, strength, layers=selection)
        scores = call_probe(probe, adapter.render(edited, batch_size=batch_size, progress=False))
        rows.append((scores - base).abs().mean(0))
    return ProbeTable(torch.stack(rows) @ matrix, group_names, labels)
