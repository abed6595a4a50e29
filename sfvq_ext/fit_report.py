"""A one-page picture of a fit: error per stage, the curve over the data, usage."""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch
from torch import Tensor

from .checkpoint import atomic_write_bytes
from .quantizer import SFVQ


def plot_fit(module: SFVQ, sample: Tensor, path: str | os.PathLike) -> None:
    """Write a PNG with three panels: training loss per window (epoch, for older fits) and exact-projection
    MSE per stage; the data and the curve in the data's first two principal
    components (vertices coloured by their index, so the order shows); and the
    hits per segment in the last stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_curve, ax_usage) = plt.subplots(1, 3, figsize=(16, 4.8))
    history = module.history
    done = 0
    for record in history:
        # loss windows (records before windows existed: epochs); a stage may end inside its first
        losses = record.get("window_loss") or record["epoch_loss"] or [record["projection_mse"]]
        xs = list(range(done + 1, done + 1 + len(losses)))
        ax_loss.plot(xs, losses, "o-", ms=3, label=f"{record['bits']} bits")
        ax_loss.plot(xs[-1], record["projection_mse"], "k*", ms=9)
        done += len(losses)
    ax_loss.set(title="dithered training loss per window (* exact-projection MSE)", xlabel="loss window",
                ylabel="MSE per component", yscale="log")
    if history:
        ax_loss.legend(fontsize=8)

    sample = sample.detach().double().cpu()[:5000]
    codebook = module.codebook.detach().double().cpu()
    mean = sample.mean(0)
    if sample.shape[1] >= 2:
        basis = torch.linalg.svd(sample - mean, full_matrices=False).Vh[:2].T
    else:
        basis = torch.eye(1, 2, dtype=torch.float64)
    s2, c2 = (sample - mean) @ basis, (codebook - mean) @ basis
    ax_curve.scatter(s2[:, 0], s2[:, 1], s=2, c="0.75", label="data")
    ax_curve.plot(c2[:, 0], c2[:, 1], "-", c="0.3", lw=1)
    points = ax_curve.scatter(c2[:, 0], c2[:, 1], s=14, c=range(len(c2)), cmap="viridis", zorder=3)
    fig.colorbar(points, ax=ax_curve, label="codebook index")
    ax_curve.set(title=f"curve of {module.current_codebook_size} vectors (first 2 PCs of the data)", xlabel="PC 1", ylabel="PC 2")
    ax_curve.set_aspect("equal", adjustable="datalim")

    usage = module.segment_usage.cpu()
    ax_usage.bar(range(len(usage)), usage.tolist(), width=1.0, color="tab:blue")
    ax_usage.set(title=f"hits per segment (perplexity {module.perplexity:.1f} of {len(usage)})",
                 xlabel="segment", ylabel="training hits")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(Path(path), buffer.getvalue())
