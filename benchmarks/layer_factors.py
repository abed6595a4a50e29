"""Which W+ layers move which factor? Single-layer edits of the shipped shape-world
StyleGAN2, read by the factor probe. Writes benchmarks/results/layer_factors.png and
layer_factors.md.

    python benchmarks/layer_factors.py                  # the shipped generator
    python benchmarks/layer_factors.py --generator PATH # weights from python -m sfvq_ext.demo.train_gan

For each W+ layer l: 64 sampled latents are moved by one edit step (a quarter of the
RMS spread of W) along each of 32 random unit directions, on layer l only, and the
probe reads every factor before and after. A cell is the mean absolute change of
that factor (range units; shape: total-variation distance of the class
probabilities). A StyleGAN2 trained with style mixing splits the work by layer
(coarse layers: pose and shape; fine ones: texture and colour); one trained without
it lets every layer move everything. The picture shows each factor's row normalised
to its largest cell, so where a factor lives reads at a glance; the table gives the
raw numbers.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import torch

from sfvq_ext.demo import load_generator, load_probe, world
from sfvq_ext.demo.measure import edit_step, layer_factor_changes

RESULTS = Path(__file__).with_name("results")


def draw(matrix: torch.Tensor, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    share = (matrix / matrix.max(0).values.clamp_min(1e-12)).T.numpy()  # factors x layers, each row to its max
    fig, ax = plt.subplots(figsize=(7, 4.2))
    im = ax.imshow(share, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(matrix.shape[0]), [f"W{l}" for l in range(matrix.shape[0])])
    ax.set_yticks(range(len(world.FACTORS)), world.FACTORS)
    ax.set_xlabel("edited W+ layer (W0: 4x4 ... W7: 32x32 toRGB)")
    for f in range(share.shape[0]):
        for l in range(share.shape[1]):
            ax.text(l, f, f"{matrix[l, f]:.3f}", ha="center", va="center", fontsize=7,
                    color="white" if share[f, l] < 0.6 else "black")
    fig.colorbar(im, ax=ax, label="change / the factor's largest")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--generator", default=None, help="weights file (default: the shipped one)")
    p.add_argument("--directions", type=int, default=32)
    p.add_argument("--latents", type=int, default=64)
    p.add_argument("--out", default=str(RESULTS / "layer_factors.png"))
    args = p.parse_args()
    adapter = load_generator(args.generator)
    probe = load_probe()
    sample = adapter.sample_latents(10_000, seed=1)
    step = edit_step(sample)
    latents = adapter.sample_latents(args.latents, seed=2)
    g = torch.Generator().manual_seed(3)
    directions = torch.randn(args.directions, adapter.latent_dim, generator=g)
    directions = directions / directions.norm(dim=1, keepdim=True)
    matrix = layer_factor_changes(adapter, probe, latents, directions, step)
    info = adapter.G.training_info
    title = (f"single-layer edits: factor change by layer ({info.get('steps')} steps, style mixing "
             f"{info.get('style_mixing_prob', 0)})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    draw(matrix, out, title)
    lines = ["# Which W+ layers move which factor", "",
             f"- command: `python benchmarks/layer_factors.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`; "
             f"date {datetime.date.today()}",
             f"- generator: {args.generator or 'the shipped one'} ({info.get('steps')} steps, style mixing "
             f"{info.get('style_mixing_prob', 0)}); {args.directions} random unit directions, {args.latents} latents, "
             f"edit step {step:.3f}",
             "- cell: mean absolute factor change (range units; shape: total-variation distance) when only that layer "
             "is edited; **bold**: the factor's largest layer",
             "", "| factor | " + " | ".join(f"W{l}" for l in range(matrix.shape[0])) + " |",
             "|---|" + "---|" * matrix.shape[0]]
    for f, name in enumerate(world.FACTORS):
        top = int(matrix[:, f].argmax())
        lines.append(f"| {name} | " + " | ".join((f"**{v:.3f}**" if l == top else f"{v:.3f}")
                                                 for l, v in enumerate(matrix[:, f].tolist())) + " |")
    lines += ["", f"Picture: `{out.name}`.", ""]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
