"""A small VQ autoencoder on scikit-learn's bundled digits (8x8 images, no download),
trained with SFVQ and with vector-quantize-pytorch's VectorQuantize at the same
codebook size, in one run. Writes benchmarks/results/vq_autoencoder.md and a picture
of the decoded codebooks (benchmarks/results/vq_autoencoder_codebook.png).

    python benchmarks/vq_autoencoder.py            # 3 seeds, a few minutes on 2 CPU cores
    python benchmarks/vq_autoencoder.py --quick    # 1 seed, fewer epochs (a smoke run)

Needs the bench extra: pip install vector-quantize-pytorch scikit-learn matplotlib.

Model: encoder 64 -> 128 -> D, one latent vector per image, quantizer, decoder
D -> 128 -> 64; pixels scaled to [0, 1]; Adam. Contenders (codebook of K vectors):
  SFVQ grown, nsvq / straight-through   start at 4 vectors, expand() every stage up to K
  SFVQ full, nsvq / straight-through    all K vectors from the start (initialised from
                                        the first batch, as the grown one)
  VectorQuantize                        the library's defaults (EMA, decay 0.8, commitment 1)
  VectorQuantize kmeans + dead-code     kmeans_init=True, threshold_ema_dead_code=2 (its
                                        README's advice against unused codes)
Measured on the held-out images (in eval mode):
  MSE               reconstruction error per pixel. SFVQ in eval returns the exact nearest
                    point on its curve: a segment index and a position t along it, so
                    "SFVQ, index only" also reports the decoder fed the segment's midpoint
                    (get_output_from_indices): what a discrete code alone carries (K-1 codes)
  codes used        distinct indices over the held-out set; perplexity = exp(entropy)
  train s           wall time of the training loop
  ordering          mean squared distance between the decoded images of neighbouring
                    codes (c_i, c_{i+1}) over the mean for all pairs of codes: 1 = no order,
                    smaller = neighbouring codes decode to more alike images
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

import sfvq_ext

RESULTS = Path(__file__).with_name("results")
BITS = 6  # K = 64 codebook vectors
LATENT = 16
CONTENDERS = ["SFVQ grown, nsvq", "SFVQ grown, straight-through", "SFVQ full, nsvq", "SFVQ full, straight-through",
              "VectorQuantize", "VectorQuantize kmeans + dead-code"]


def load_digits(seed: int = 0, test_fraction: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits as sk_load_digits

    images = torch.tensor(sk_load_digits().data, dtype=torch.float32) / 16.0  # (1797, 64) in [0, 1]
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    n_test = round(test_fraction * len(images))
    return images[order[n_test:]], images[order[:n_test]]


class Autoencoder(nn.Module):
    def __init__(self, quantizer: nn.Module):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, LATENT))
        self.quantizer = quantizer
        self.decoder = nn.Sequential(nn.Linear(LATENT, 128), nn.GELU(), nn.Linear(128, 64))

    def forward(self, x):
        q, indices, vq_loss = self.quantizer(self.encoder(x))
        return self.decoder(q), indices, vq_loss


def make_quantizer(name: str) -> nn.Module:
    if name.startswith("SFVQ"):
        gradient = "nsvq" if name.endswith("nsvq") else "straight_through"
        # this benchmark drives the growth itself (expand() per stage, a fresh optimizer after each)
        return sfvq_ext.SFVQ(LATENT, BITS, gradient=gradient, start_bits=2 if "grown" in name else BITS, grow_every=None)
    from vector_quantize_pytorch import VectorQuantize

    if name == "VectorQuantize":
        return VectorQuantize(dim=LATENT, codebook_size=2**BITS)
    return VectorQuantize(dim=LATENT, codebook_size=2**BITS, kmeans_init=True, threshold_ema_dead_code=2)


def train(name: str, train_x: torch.Tensor, epochs: int, batch: int, lr: float, seed: int) -> tuple[Autoencoder, float]:
    torch.manual_seed(seed)
    model = Autoencoder(make_quantizer(name))
    vq = model.quantizer
    sfvq = isinstance(vq, sfvq_ext.SFVQ)
    grown = sfvq and "grown" in name
    stages = BITS - 1 if grown else 1  # 2, 3, ..., BITS bits
    net_params = [p for n, p in model.named_parameters() if not n.startswith("quantizer.")]
    net_opt = torch.optim.Adam(net_params, lr=lr)
    vq_params = list(vq.parameters()) if sfvq else [p for p in vq.parameters() if p.requires_grad]
    add_vq_loss = not (sfvq and vq.gradient == "nsvq")  # NSVQ trains its codebook from the downstream loss
    order_gen = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    for stage in range(stages):
        if stage > 0:
            vq.expand()
        vq_opt = torch.optim.Adam(vq_params, lr=lr) if vq_params else None  # fresh after each expand
        stage_epochs = epochs // stages + (1 if stage < epochs % stages else 0)
        for _ in range(stage_epochs):
            for rows in torch.randperm(len(train_x), generator=order_gen).split(batch):
                x = train_x[rows]
                recon, _, vq_loss = model(x)
                loss = (recon - x).square().mean() + (vq_loss.sum() if add_vq_loss else 0)
                net_opt.zero_grad()
                if vq_opt:
                    vq_opt.zero_grad()
                loss.backward()
                net_opt.step()
                if vq_opt:
                    vq_opt.step()
    return model.eval(), time.perf_counter() - started


def perplexity(indices: torch.Tensor) -> float:
    p = torch.bincount(indices.reshape(-1)).double()
    p = p[p > 0] / p.sum()
    return math.exp(-(p * p.log()).sum().item())


def ordering(images: torch.Tensor) -> float:
    """Mean squared distance of neighbouring rows over the mean over all pairs of rows."""
    neighbours = (images[1:] - images[:-1]).square().sum(1).mean()
    all_pairs = torch.cdist(images.double(), images.double()).square()
    K = len(images)
    return float(neighbours / (all_pairs.sum() / (K * (K - 1))))


@torch.no_grad()
def evaluate(model: Autoencoder, test_x: torch.Tensor) -> dict:
    recon, indices, _ = model(test_x)
    vq = model.quantizer
    result = {"mse": float((recon - test_x).square().mean()), "used": len(indices.unique()),
              "perplexity": perplexity(indices)}
    if isinstance(vq, sfvq_ext.SFVQ):
        index_only = model.decoder(vq.get_output_from_indices(indices))
        result["mse_index_only"] = float((index_only - test_x).square().mean())
        codebook = vq.codebook
    else:
        codebook = vq.codebook.reshape(-1, LATENT)
    decoded = model.decoder(codebook).clamp(0, 1)  # each code's image, in index (curve) order
    result["ordering"] = ordering(decoded)
    result["decoded"] = decoded
    return result


def draw_codebooks(panels: list[tuple[str, torch.Tensor]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    K = panels[0][1].shape[0]
    cols = 16
    rows = K // cols
    fig, axes = plt.subplots(len(panels), 1, figsize=(cols * 0.55, len(panels) * (rows * 0.55 + 0.45)))
    for ax, (title, decoded) in zip(axes, panels):
        tiles = decoded.reshape(rows, cols, 8, 8)
        # one image: a 1-pixel white gap between tiles
        canvas = torch.ones(rows * 9 - 1, cols * 9 - 1)
        for r in range(rows):
            for c in range(cols):
                canvas[r * 9 : r * 9 + 8, c * 9 : c * 9 + 8] = 1 - tiles[r, c]  # dark ink on white
        ax.imshow(canvas.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=9, loc="left")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=1, help="the model is tiny: more threads only add overhead")
    p.add_argument("--quick", action="store_true", help="1 seed, 20 epochs, no files written")
    args = p.parse_args()
    if args.quick:
        args.seeds, args.epochs = 1, 20
    torch.set_num_threads(args.threads)
    train_x, test_x = load_digits()
    results = {name: [] for name in CONTENDERS}
    for seed in range(args.seeds):
        for name in CONTENDERS:
            model, seconds = train(name, train_x, args.epochs, args.batch, args.lr, seed)
            r = evaluate(model, test_x)
            r["seconds"] = seconds
            results[name].append(r)
            extra = f", index only {r['mse_index_only']:.5f}" if "mse_index_only" in r else ""
            print(f"seed {seed} {name:34s} mse {r['mse']:.5f}{extra}  used {r['used']:2d}  "
                  f"perplexity {r['perplexity']:5.1f}  ordering {r['ordering']:.3f}  {seconds:5.1f} s", flush=True)
    if args.quick:
        return

    def cell(name, key, fmt):
        values = [r[key] for r in results[name] if key in r]
        if not values:
            return "—"
        if len(values) == 1:
            return format(values[0], fmt)
        return f"{format(statistics.mean(values), fmt)} ± {format(statistics.stdev(values), fmt)}"

    command = "python benchmarks/vq_autoencoder.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    import sklearn
    import vector_quantize_pytorch  # noqa: F401
    from importlib.metadata import version

    lines = [
        "# VQ autoencoder on scikit-learn's digits: SFVQ against VectorQuantize",
        "",
        f"- command: `{command}`",
        f"- machine: {platform.machine()}, threads: {args.threads}, torch {torch.__version__}, "
        f"vector-quantize-pytorch {version('vector-quantize-pytorch')}, scikit-learn {sklearn.__version__}",
        f"- date: {datetime.date.today()}; data: `sklearn.datasets.load_digits` (1797 images, 8x8), "
        f"{len(train_x)} for training, {len(test_x)} held out (fixed split)",
        f"- model: 64 -> 128 -> {LATENT} encoder, one latent per image, quantizer with K = {2**BITS} codebook "
        f"vectors, {LATENT} -> 128 -> 64 decoder; Adam lr {args.lr}, batch {args.batch}, {args.epochs} epochs "
        f"(grown SFVQ: split evenly over the 2..{BITS}-bit stages, a fresh quantizer optimizer after each expand())",
        f"- mean ± sd over {args.seeds} seeds; every number on the held-out images, in eval mode",
        "",
        "| quantizer | MSE | MSE, index only | codes used | perplexity | ordering (neighbours / all pairs) | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in CONTENDERS:
        lines.append(f"| {name} | {cell(name, 'mse', '.5f')} | {cell(name, 'mse_index_only', '.5f')} | "
                     f"{cell(name, 'used', '.1f')} | {cell(name, 'perplexity', '.1f')} | "
                     f"{cell(name, 'ordering', '.3f')} | {cell(name, 'seconds', '.1f')} |")
    RESULTS.mkdir(exist_ok=True)
    picture = RESULTS / "vq_autoencoder_codebook.png"
    panels = [(f"{name} (seed 0): decoded codebook, {'curve' if 'SFVQ' in name else 'index'} order c0 .. c{2**BITS - 1},"
               f" row by row", results[name][0]["decoded"])
              for name in ("SFVQ grown, nsvq", "SFVQ full, nsvq", "VectorQuantize")]
    draw_codebooks(panels, picture)
    lines += ["", f"Picture: `{picture.name}` (decoded codebooks of seed 0, 16 per row).", ""]
    (RESULTS / "vq_autoencoder.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
