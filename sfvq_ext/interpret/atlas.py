"""The panoptic atlas: every factor a probe reads, along the curve.

The paper's first claim is that the ordered codebook tells which part of the latent
space holds which generative factor. The atlas measures it: each codebook vector is
rendered and read by a probe (any callable ``images -> (n, F)`` scores), and the F
readings are drawn as tracks under the codebook strip, in curve order, so a region
of the curve where one factor sweeps while the others hold still shows as one
moving track. The panoptic score says how orderly each track is: the mean change
between neighbouring codebook vectors over the mean change between random pairs
(1: no order, as for an unordered codebook; lower is better).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .change import call_probe, probe_names
from .pictures import to_uint8


@dataclass
class FactorTracks:
    """Probe readings of a codebook, in curve order.

    Attributes:
        scores: float64 ``(K, F)``: row k is the probe's F scores for the render of
            codebook vector k, in the probe's own units.
        names: the F score names (the probe's ``names``, else ``score i``).
    """

    scores: Tensor
    names: list[str]

    def panoptic_scores(self) -> Tensor:
        """Per factor, float64 ``(F,)``: :func:`panoptic_score` of its track."""
        return panoptic_score(self.scores)

    def panoptic_by_name(self) -> dict[str, float | None]:
        """``{name: panoptic score}``, ready for JSON: None for a constant track (NaN)."""
        return {n: (None if v != v else v) for n, v in zip(self.names, self.panoptic_scores().tolist())}

    def most_ordered(self) -> list[tuple[str, float]]:
        """``(name, panoptic score)`` of every non-constant track, most ordered (lowest) first."""
        return sorted(((n, v) for n, v in self.panoptic_by_name().items() if v is not None), key=lambda nv: nv[1])

    def normalized(self) -> Tensor:
        """The tracks scaled to ``[0, 1]`` each (min to max over the curve; a constant
        track is 0.5), for drawing side by side."""
        low, high = self.scores.min(0).values, self.scores.max(0).values
        span = high - low
        return torch.where(span > 0, (self.scores - low) / torch.where(span > 0, span, 1), 0.5)


def panoptic_score(values: Tensor) -> Tensor:
    """How orderly ``values`` ``(K, F)`` (one column per factor) are along the rows:
    per column, the mean ``|v[k+1] - v[k]|`` over neighbouring rows divided by the mean
    ``|v[i] - v[j]|`` over all pairs ``i != j`` (float64 ``(F,)``). 1 for rows in random
    order, lower when neighbours are alike (a monotone sweep of K rows scores
    ``3 / (K + 1)``); NaN for a constant column. Raises ``ValueError`` for fewer than
    2 rows or a non-2-D input."""
    if not isinstance(values, Tensor) or values.dim() != 2 or values.shape[0] < 2:
        got = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(f"panoptic_score: values must be (K, F) with K >= 2, got {got}")
    v = values.detach().double().cpu()
    K = v.shape[0]
    neighbours = (v[1:] - v[:-1]).abs().mean(0)
    pairs = (v[:, None] - v[None]).abs().sum((0, 1)) / (K * (K - 1))
    return neighbours / pairs


@torch.no_grad()
def factor_tracks(adapter, codebook: Tensor, probe, *, names=None, images: Tensor | None = None,
                  batch_size: int = 64, progress: bool = True) -> FactorTracks:
    """Render every codebook vector (``codebook`` ``(K, latent_dim)``, in curve order)
    and read each with ``probe`` (any callable ``images (n, 3, H, W) in [-1, 1] -> (n,
    F)`` float scores; names from ``names``, else ``probe.names``, else ``score i``).
    ``images``: the codebook's renders ``(K, 3, H, W)`` if the caller already has them
    (e.g. from :func:`render_codebook`), so that nothing is rendered twice. Returns a
    :class:`FactorTracks`. Raises ``ValueError`` for a codebook of the wrong width,
    ``images`` of another count than the codebook's, or a probe whose output is not
    ``(n, F)`` finite floats."""
    if not isinstance(codebook, Tensor) or codebook.dim() != 2 or codebook.shape[0] < 2:
        raise ValueError("factor_tracks: codebook must be a (K, latent_dim) tensor with K >= 2")
    if codebook.shape[1] != adapter.latent_dim:
        raise ValueError(f"factor_tracks: codebook has width {codebook.shape[1]}, the generator's latents "
                         f"{adapter.latent_dim}")
    if images is not None and (not isinstance(images, Tensor) or images.dim() != 4
                               or images.shape[0] != codebook.shape[0]):
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"factor_tracks: images must be the codebook's {codebook.shape[0]} renders "
                         f"(K, 3, H, W), got {got}")
    scores = []
    for start in tqdm(range(0, codebook.shape[0], batch_size), desc="atlas", unit="batch", disable=not progress):
        part = (images[start:start + batch_size] if images is not None
                else adapter.render(codebook[start:start + batch_size].detach(), batch_size=batch_size, progress=False))
        scores.append(call_probe(probe, part))
    scores = torch.cat(scores)
    return FactorTracks(scores, probe_names(probe, scores.shape[1], names))


def draw_atlas(tracks: FactorTracks, strip: Tensor | None, path, *, title: str = "panoptic atlas") -> None:
    """Write the atlas as a PNG: the codebook strip (``strip``: the K renders ``(K, 3, H,
    W)`` in [-1, 1], in curve order; omitted if None) above one track per factor, each
    scaled to its own range and labelled with its name and panoptic score, all on the
    curve coordinate's axis. Written atomically."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..checkpoint import atomic_write_bytes

    K, n = tracks.scores.shape
    values = tracks.normalized().numpy()
    scores = tracks.panoptic_scores()
    width = min(40.0, max(8.0, 0.3 * K))  # inches: a vector's column is 0.3 in wide up to K = 133
    strip_height = width / K * 0.85  # square tiles in the plot area
    heights = ([strip_height] if strip is not None else []) + [0.45] * n
    rows = len(heights)
    fig, axes = plt.subplots(rows, 1, figsize=(width, 1.1 + sum(heights) * 1.15), sharex=True,
                             gridspec_kw={"height_ratios": heights})
    axes = list(axes) if rows > 1 else [axes]
    if strip is not None:
        tiles = to_uint8(strip)  # (K, H, W, 3)
        image = torch.cat(list(tiles), dim=1).numpy()  # one row of K tiles
        axes[0].imshow(image, extent=(-0.5, K - 0.5, 0, 1), aspect="auto", interpolation="nearest")
        axes[0].set_yticks([])
        axes[0].set_title(title, fontsize=10, loc="left")
    low, high = tracks.scores.min(0).values.tolist(), tracks.scores.max(0).values.tolist()
    for ax, name, track, score, lo, hi in zip(axes[-n:], tracks.names, values.T, scores.tolist(), low, high):
        ax.fill_between(range(K), track, step="mid", alpha=0.35)
        ax.plot(range(K), track, drawstyle="steps-mid", linewidth=1)
        ax.set_ylim(-0.05, 1.05)
        ax.set_yticks([])
        # the range shows a track that only magnifies probe noise (a factor the generator never varies)
        ax.set_ylabel(f"{name}  {score:.2f}\n{lo:.2g} .. {hi:.2g}", rotation=0, ha="right", va="center", fontsize=8)
    axes[-1].set_xlabel("codebook vector (curve order); beside each track: its name, panoptic score "
                        "(neighbour / random-pair change, 1 = no order) and range", fontsize=8)
    axes[-1].set_xlim(-0.5, K - 0.5)
    fig.tight_layout(h_pad=0.1)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(Path(path), buffer.getvalue())
