"""An EMA copy of a growing SFVQ: what happens to torch's AveragedModel at each doubling,
and what an expand hook does about it. Writes benchmarks/results/ema_growth.md.

    python benchmarks/ema_growth.py            # 3 seeds, about 3 minutes on 2 CPU cores
    python benchmarks/ema_growth.py --quick    # 1 seed, no file written

Needs the bench extra (scikit-learn, for its bundled digits; no download).

The loop: SFVQ(64, codebook_size=64, grow_every=150) fitted on scikit-learn's digits
(standardised, 1437 rows to train on, 360 held out), Adam (lr 1e-2, batch 128, 900
steps, the codebook's Adam state started afresh at each doubling, as docs/quantizer.md
recommends), and an EMA copy, ``AveragedModel(vq, multi_avg_fn=get_ema_multi_avg_fn(decay))``
updated after every step, as EMA generators (StyleGAN's G_ema) are. AveragedModel
averages ``weight`` row by row, but a doubling interleaves new vertices, so afterwards
row i holds another vertex than before. Three ways to run the EMA:

  left alone     the unchanged loop: rows of unrelated vertices are averaged together
  grown          vq.register_expand_hook(lambda vq: ema.module.expand()): the copy grows
                 with the layer (the same deterministic rule), so each row keeps
                 averaging one vertex
  restarted      vq.register_expand_hook(lambda vq: ema.n_averaged.zero_()): the next
                 update copies the layer, and the average starts again

Measured on the held-out rows, the EMA model in eval mode (exact projection onto its
curve): the projection MSE at the end, and the largest rise of that MSE between two
measurements (every 25 steps) after a doubling (a well-behaved average does not get
worse while the layer improves). The layer itself (no EMA) is the reference row.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

import sfvq_ext

RESULTS = Path(__file__).with_name("results")
STEPS, GROW_EVERY, BATCH, EVERY = 900, 150, 128, 25
MODES = ("left alone", "grown", "restarted")


def digits(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    x = torch.from_numpy(load_digits().data).float()
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    return x[order[:1437]], x[order[1437:]]


def held_out_mse(module: torch.nn.Module, held: torch.Tensor) -> float:
    module.eval()
    with torch.no_grad():
        loss = float(module(held)[2])
    module.train()
    return loss


def run(seed: int, decay: float | None, mode: str | None) -> dict:
    """One training run; ``decay=None`` measures the layer itself."""
    torch.manual_seed(seed)
    train, held = digits(seed)
    vq = sfvq_ext.SFVQ(64, codebook_size=64, grow_every=GROW_EVERY)
    vq.manual_seed(seed)
    optimizer = torch.optim.Adam(vq.parameters(), lr=1e-2)
    vq.register_expand_hook(lambda layer: optimizer.state.pop(layer.weight, None))
    ema = None
    if decay is not None:
        vq.initialize(train[:BATCH])
        ema = AveragedModel(vq, multi_avg_fn=get_ema_multi_avg_fn(decay))
        if mode == "grown":
            vq.register_expand_hook(lambda layer: ema.module.expand())
        elif mode == "restarted":
            vq.register_expand_hook(lambda layer: ema.n_averaged.zero_())
    watched = vq if ema is None else ema.module
    doublings, mse, step = [], {}, 0
    vq.register_expand_hook(lambda layer: doublings.append(step))
    for step in range(1, STEPS + 1):
        batch = train[torch.randint(0, len(train), (BATCH,))]
        _, _, loss = vq(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if ema is not None:
            ema.update_parameters(vq)
        if step % EVERY == 0:
            mse[step] = held_out_mse(watched, held)
    # the rise over the two measurements after each doubling, from the last one before it
    rises = [max(mse[before + EVERY], mse[before + 2 * EVERY]) - mse[before]
             for before in ((d - 1) // EVERY * EVERY for d in doublings)]
    assert vq.current_codebook_size == 64 and watched.current_codebook_size == 64
    return {"final": mse[STEPS], "rise": max(rises)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1 seed, no file written")
    args = p.parse_args()
    torch.set_num_threads(1)
    seeds = [0] if args.quick else [0, 1, 2]
    rows = [("the layer itself (no EMA)", None, None)] + [
        (f"EMA {decay}, {mode}", decay, mode) for decay in (0.99, 0.999) for mode in MODES]
    results = {label: [] for label, _, _ in rows}
    with tqdm(total=len(rows) * len(seeds), desc="ema_growth", unit="run") as bar:
        for seed in seeds:
            for label, decay, mode in rows:
                results[label].append(run(seed, decay, mode))
                bar.update()

    def cell(label: str, key: str) -> str:
        values = [r[key] for r in results[label]]
        if len(values) == 1:
            return f"{values[0]:.4f}"
        return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"

    lines = [
        "# An EMA copy of a growing SFVQ (benchmarks/ema_growth.py)",
        "",
        f"{datetime.date.today()}, {platform.machine()}, torch {torch.__version__}, one thread, "
        f"{len(seeds)} seed(s) (mean ± sd). Digits, SFVQ(64, codebook_size=64, grow_every={GROW_EVERY}), "
        f"{STEPS} Adam steps; held-out projection MSE of the model in eval mode.",
        "",
        "| run | held-out MSE at the end | against the same seed's EMA left alone | largest rise after a doubling |",
        "|---|---|---|---|",
    ]

    def paired(label: str, decay: float | None) -> str:
        """The end MSE minus that of the same seed's EMA left alone (each seed has its own held-out split)."""
        if decay is None:
            return ""
        base = results[f"EMA {decay}, left alone"]
        diffs = [r["final"] - b["final"] for r, b in zip(results[label], base)]
        if len(diffs) == 1:
            return f"{diffs[0]:+.4f}"
        return f"{statistics.mean(diffs):+.4f} ± {statistics.stdev(diffs):.4f}"

    for label, decay, _ in rows:
        lines.append(f"| {label} | {cell(label, 'final')} | {paired(label, decay)} | {cell(label, 'rise')} |")
    lines += ["", "Read with the script's docstring: 'grown' is the EMA of each vertex; 'restarted' forgets "
              "the curves before each doubling, so it is closer to the layer and is no longer an average "
              "over the run."]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "ema_growth.md").write_text(text)


if __name__ == "__main__":
    main()
