"""The literal swap: a small conv VQ autoencoder trained with vector-quantize-pytorch's
``VectorQuantize`` and, in the very same loop, with ``SFVQ`` put in its place, in one
run. Writes benchmarks/results/vq_swap.md.

    python benchmarks/vq_swap.py             # 3 seeds, about 10 minutes on 2 CPU cores
    python benchmarks/vq_swap.py --quick     # 1 seed, no file written

Needs the bench extra: pip install vector-quantize-pytorch scikit-learn.

The swap is one line and nothing else changes (no expand() calls, no extra optimizer):

    VectorQuantize(dim=16, codebook_size=64, accept_image_fmap=True)
    SFVQ(16, codebook_size=64, accept_image_fmap=True)

Model: scikit-learn's digits (8x8, no download) -> conv encoder -> feature maps
(B, 16, 4, 4) -> quantizer (64 codes) -> conv decoder; one Adam over all parameters
(lr 1e-3, batch 64, 30 epochs, ~690 steps); loss = reconstruction MSE + the quantizer's
loss. Measured on the held-out images in eval mode: reconstruction MSE (SFVQ in eval
returns the exact nearest point on its curve, a segment and a position along it; "index
only" feeds the decoder the segment's midpoint instead, `get_output_from_indices`: what
the discrete code alone carries, like for like with VectorQuantize), codes in use,
the quantizer's size at the end, and the codebook's order: the mean squared distance
between neighbouring codebook vectors over that of all pairs (1: no order, as for an
unordered codebook read in index order; smaller: neighbours alike). Besides the literal swap, SFVQ rows with other
``grow_every`` values (steps per size) show how the default was chosen, and
``grow_every=None`` is the layer as it was before automatic growth (it stays at 4
vectors unless the user calls expand()). Three rows add one line to the loop, an
expand hook (``SFVQ.register_expand_hook``) that handles Adam's state for the codebook
at each doubling: started afresh (the recipe in SFVQ's docstring), moments zeroed, or
moved with the rows (what the layer does not do, and why).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

import sfvq_ext

RESULTS = Path(__file__).with_name("results")
DIM, CODES = 16, 64
# (label, constructor keywords for SFVQ (None = VectorQuantize), what an expand hook does
# with Adam's state for the codebook at each doubling (None = no hook: the literal swap))
CONTENDERS = [
    ("VectorQuantize(dim=16, codebook_size=64, accept_image_fmap=True)", None),
    ("SFVQ(16, codebook_size=64, accept_image_fmap=True)  [the literal swap, default grow_every=100]", {}),
    ("SFVQ + Adam's state for the codebook started afresh at each doubling (expand hook)", {}, "reset"),
    ("SFVQ + Adam's moments zeroed at each doubling, its step count kept (expand hook)", {}, "zero"),
    ("SFVQ + Adam's moments moved with the rows at each doubling (expand hook)", {}, "move"),
    ("SFVQ, grow_every=25", {"grow_every": 25}),
    ("SFVQ, grow_every=50", {"grow_every": 50}),
    ("SFVQ, grow_every=200", {"grow_every": 200}),
    ("SFVQ, grow_every=None (no automatic growth: the layer before)", {"grow_every": None}),
]


def load_digits(seed: int = 0, test_fraction: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits as sk_load_digits

    images = torch.tensor(sk_load_digits().data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    n_test = round(test_fraction * len(images))
    return images[order[n_test:]], images[order[:n_test]]


class ConvAutoencoder(nn.Module):
    def __init__(self, quantizer: nn.Module):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.GELU(),
                                     nn.Conv2d(32, DIM, 4, stride=2, padding=1))  # (B, 16, 4, 4)
        self.quantizer = quantizer
        self.decoder = nn.Sequential(nn.ConvTranspose2d(DIM, 32, 4, stride=2, padding=1), nn.GELU(),
                                     nn.Conv2d(32, 1, 3, padding=1))

    def forward(self, x):
        q, indices, vq_loss = self.quantizer(self.encoder(x))
        return self.decoder(q), indices, vq_loss


def make_quantizer(keywords: dict | None) -> nn.Module:
    if keywords is None:
        from vector_quantize_pytorch import VectorQuantize

        return VectorQuantize(dim=DIM, codebook_size=CODES, accept_image_fmap=True)
    return sfvq_ext.SFVQ(DIM, codebook_size=CODES, accept_image_fmap=True, **keywords)


def on_expand_hook(optimizer: torch.optim.Optimizer, what: str):
    """An expand hook doing ``what`` with the optimizer's state for the codebook:
    "reset" (drop it: Adam starts afresh on the next step, the recipe in SFVQ's
    docstring), "zero" (moments to zero, step count kept: Adam's bias correction then
    takes larger steps for a while) or "move" (each new row takes the moments of the
    old row it was split from: what the layer deliberately does not do)."""
    def hook(vq: sfvq_ext.SFVQ) -> None:
        if what == "reset":
            optimizer.state.pop(vq.weight, None)
            return
        source = torch.arange(vq.current_codebook_size) // 2  # new rows 2j, 2j+1 come from old row j
        for value in optimizer.state.get(vq.weight, {}).values():
            if value.shape == vq.weight.shape:
                if what == "zero":
                    value.zero_()
                else:
                    value[: len(source)] = value[source].clone()
    return hook


def train(keywords, train_x, epochs: int, batch: int, lr: float, seed: int,
          on_expand: str | None = None) -> tuple[ConvAutoencoder, float]:
    """The same loop for every quantizer: one optimizer, loss = reconstruction + quantizer loss
    (plus, for the on_expand rows, one expand hook: :func:`on_expand_hook`)."""
    torch.manual_seed(seed)
    model = ConvAutoencoder(make_quantizer(keywords))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    if on_expand is not None:
        model.quantizer.register_expand_hook(on_expand_hook(optimizer, on_expand))
    order = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    for _ in range(epochs):
        for rows in torch.randperm(len(train_x), generator=order).split(batch):
            x = train_x[rows]
            recon, _, vq_loss = model(x)
            loss = (recon - x).square().mean() + vq_loss.sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval(), time.perf_counter() - started


def ordering(codebook: torch.Tensor) -> float:
    """Mean squared distance of neighbouring rows over the mean over all pairs of rows."""
    c = codebook.double()
    neighbours = (c[1:] - c[:-1]).square().sum(1).mean()
    K = len(c)
    return float(neighbours / (torch.cdist(c, c).square().sum() / (K * (K - 1))))


@torch.no_grad()
def evaluate(model: ConvAutoencoder, test_x: torch.Tensor) -> dict:
    recon, indices, _ = model(test_x)
    vq = model.quantizer
    sfvq = isinstance(vq, sfvq_ext.SFVQ)
    size = vq.current_codebook_size if sfvq else CODES
    codebook = vq.codebook if sfvq else vq.codebook.reshape(-1, DIM)
    index_only = model.decoder(vq.get_output_from_indices(indices)) if sfvq else recon
    return {"mse": float((recon - test_x).square().mean()), "used": len(indices.unique()), "size": size,
            "ordering": ordering(codebook), "mse_index_only": float((index_only - test_x).square().mean())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=1, help="the model is tiny: more threads only add overhead")
    p.add_argument("--quick", action="store_true", help="1 seed, no file written")
    args = p.parse_args()
    if args.quick:
        args.seeds = 1
    torch.set_num_threads(args.threads)
    train_x, test_x = load_digits()
    steps = args.epochs * -(-len(train_x) // args.batch)
    results: dict[str, list[dict]] = {label: [] for label, *_ in CONTENDERS}
    for seed in range(args.seeds):
        for label, keywords, *on_expand in CONTENDERS:
            model, seconds = train(keywords, train_x, args.epochs, args.batch, args.lr, seed, *on_expand)
            r = evaluate(model, test_x) | {"seconds": seconds}
            results[label].append(r)
            print(f"seed {seed}  {label[:60]:60s} mse {r['mse']:.5f} (index only {r['mse_index_only']:.5f})  used {r['used']:2d}/{r['size']:2d}  "
                  f"ordering {r['ordering']:.3f}  {seconds:5.1f} s", flush=True)
    if args.quick:
        return

    def cell(label, key, fmt):
        values = [r[key] for r in results[label]]
        if len(values) == 1:
            return format(values[0], fmt)
        return f"{format(statistics.mean(values), fmt)} ± {format(statistics.stdev(values), fmt)}"

    from importlib.metadata import version

    reference = statistics.mean(r["mse"] for r in results[CONTENDERS[0][0]])
    command = "python benchmarks/vq_swap.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    lines = [
        "# The literal swap: SFVQ in place of VectorQuantize in an unchanged training loop",
        "",
        f"- command: `{command}`",
        f"- machine: {platform.machine()}, threads: {args.threads}, torch {torch.__version__}, "
        f"vector-quantize-pytorch {version('vector-quantize-pytorch')}, scikit-learn {version('scikit-learn')}",
        f"- date: {datetime.date.today()}; data: `sklearn.datasets.load_digits` (8x8), {len(train_x)} images for "
        f"training, {len(test_x)} held out (fixed split)",
        f"- model: conv encoder -> (B, {DIM}, 4, 4) feature maps -> quantizer with {CODES} codes -> conv decoder; "
        f"one Adam over all parameters, lr {args.lr}, batch {args.batch}, {args.epochs} epochs ({steps} steps); "
        "loss = reconstruction MSE + the quantizer's loss; nothing else differs between the rows but the "
        "expand hook of the three rows that name one (one line added to the loop, `on_expand_hook`)",
        f"- mean ± sd over {args.seeds} seeds; held-out images, eval mode; ratio = MSE / VectorQuantize's MSE",
        "",
        "| quantizer | held-out MSE | ratio | MSE, index only | codes used | size at the end | ordering | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, *_ in CONTENDERS:
        ratio = statistics.mean(r["mse"] for r in results[label]) / reference
        lines.append(f"| {label} | {cell(label, 'mse', '.5f')} | {ratio:.2f} | {cell(label, 'mse_index_only', '.5f')} | "
                     f"{cell(label, 'used', '.1f')} | "
                     f"{cell(label, 'size', '.0f')} | {cell(label, 'ordering', '.3f')} | "
                     f"{cell(label, 'seconds', '.1f')} |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "vq_swap.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
