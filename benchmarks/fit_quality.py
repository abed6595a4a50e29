"""How good a curve sfvq_ext.fit makes, and what its order costs: SFVQ's recipes
against MiniBatchKMeans (no order) and a 1-D self-organizing map (MiniSom, the
classic ordered codebook) at the same number of vectors, on the same data, in one run.

    python benchmarks/fit_quality.py --sizes ci demo        # ~5 minutes on 2 cores
    python benchmarks/fit_quality.py --sizes large          # 2**20 x 512 rows, 8 bits: ~12 minutes on 2 cores (+ writing the data once)
    python benchmarks/fit_quality.py                        # all three, one results file

Data (all made here, nothing downloaded): ``ci`` and ``large`` are the seeded mixture
of benchmarks/fit_data.py (50 anisotropic Gaussians with Dirichlet weights, 2% Student-t
outliers) at 32,768 x 64 (6 bits) and 1,048,576 x 512 (8 bits, as 8 .npy shards in
--data-dir, written once); ``demo`` is 65,536 W latents of the shipped demo StyleGAN2
(6 bits). Every method sees the same rows, in memory.

Measures, all on every training row: ``curve MSE`` — squared distance to the nearest
point of the piecewise-linear curve through the vectors in their order, per
component (sfvq_ext.project, exact); ``vertex MSE`` — to the nearest vector
(k-means' own measure); ``segments in use`` — segments that are some row's nearest,
and the ``perplexity`` of that usage (exp of its entropy; K-1 is even use);
``order`` — mean distance between consecutive vectors over the mean distance
between two different vectors (1: no order; smaller: neighbours in the order are
near in space; it is the curve's length over (K-1) x the mean pair distance, so a
curve that reaches more of the clusters is longer); ``clusters reached`` — mixture
clusters whose mean is the nearest of some vector's (of 50; a few have tiny weights);
wall time of the fit. k-means' vectors have no order: its curve MSE and order are
given for the order it happens to return.

Writes benchmarks/results/fit_quality.md (and the fits' pictures, fit_quality_*.png).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

import sfvq_ext
from sfvq_ext.data import NpyShards
from sfvq_ext.fit_report import plot_fit

sys.path.insert(0, str(Path(__file__).parent))
from fit_data import CLUSTERS, SIZES, Mixture, write_shards  # noqa: E402

fit_module = importlib.import_module("sfvq_ext.fit")  # the module: sfvq_ext.fit is the function

RESULTS = Path(__file__).parent / "results"
BITS = {"ci": 6, "large": 8, "demo": 6}

# (label, sfvq_ext.fit keywords): the recipe before issue 18, the report's command, and the
# new defaults with each change taken out in turn, so every change is measured.
SFVQ_RUNS = {
    "SFVQ, defaults before (authors' schedule, batch 256)": dict(preset="authors", batch_size=256),
    "SFVQ, the report's command (authors', 2 epochs, batch 4096)": dict(preset="authors", epochs=2, batch_size=4096),
    "SFVQ default without revival": dict(revive=False),
    "SFVQ default, revival without shortening bridges": dict(shorten_bridges=False),
    "SFVQ default with fixed epochs (milestones, 5)": dict(schedule="milestones", epochs=5),
    "SFVQ default with absolute lr 1e-3": dict(lr=1e-3, lr_unit="absolute"),
    "SFVQ default (new)": dict(),
}
# the slow ablations are left out at the large size (each would be a fit of its own)
LARGE_SKIPS = ("SFVQ default with fixed epochs (milestones, 5)", "SFVQ default with absolute lr 1e-3")


# -- measures ------------------------------------------------------------------


def ordering_ratio(codebook: torch.Tensor) -> float:
    """Mean distance of consecutive vectors over the mean distance of all pairs of different vectors."""
    c = codebook.double()
    neighbours = (c[1:] - c[:-1]).norm(dim=1).mean()
    pairs = torch.cdist(c, c)
    K = len(c)
    return float(neighbours / (pairs.sum() / (K * (K - 1))))


def clusters_reached(codebook: torch.Tensor, means: torch.Tensor | None) -> int | None:
    """Mixture clusters holding a vector: distinct nearest cluster means of the vectors (None: not a mixture)."""
    if means is None:
        return None
    return len(set(torch.cdist(codebook.double(), means.double()).argmin(1).tolist()))


def measures(x: torch.Tensor, codebook: torch.Tensor, means: torch.Tensor | None = None) -> dict:
    """Curve and vertex MSE per component, segments in use and their perplexity, order, and
    for the mixtures the clusters reached (see the module doc)."""
    codebook = codebook.detach().float().cpu()
    K = codebook.shape[0]
    curve_sum = vertex_sum = 0.0
    usage = torch.zeros(K - 1, dtype=torch.float64)
    for part in x.split(65536):
        projection = sfvq_ext.project(part, codebook)
        curve_sum += float(projection.dist.double().sum())
        vertex_sum += float(sfvq_ext.nearest(part, codebook)[1].double().sum())
        usage += torch.bincount(projection.segment, minlength=K - 1).double()
    p = usage[usage > 0] / usage.sum()
    return {"curve": curve_sum / x.numel(), "vertex": vertex_sum / x.numel(), "used": int((usage > 0).sum()),
            "perplexity": math.exp(float(-(p * p.log()).sum())), "order": ordering_ratio(codebook),
            "clusters": clusters_reached(codebook, means)}


# -- methods -------------------------------------------------------------------


@contextlib.contextmanager
def bridges_shortened(on: bool):
    """With ``on`` False, fit's revival skips :func:`sfvq_ext.fit.shorten_bridges` (for the ablation only)."""
    original = fit_module.shorten_bridges
    if not on:
        fit_module.shorten_bridges = lambda codebook, counts: (codebook, counts, 0)
    try:
        yield
    finally:
        fit_module.shorten_bridges = original


def fit_kmeans(x: torch.Tensor, K: int, seed: int) -> torch.Tensor:
    """scikit-learn's MiniBatchKMeans, batch 4096, 3 k-means++ starts, its own early stopping."""
    from sklearn.cluster import MiniBatchKMeans

    model = MiniBatchKMeans(n_clusters=K, batch_size=4096, n_init=3, random_state=seed).fit(x.numpy())
    return torch.from_numpy(model.cluster_centers_).float()


def som_iterations(n: int) -> int:
    """Online SOM updates: three passes over the data, at most 2**18 (MiniSom updates one row at a time)."""
    return min(3 * n, 2**18)


def fit_som(x: torch.Tensor, K: int, seed: int) -> torch.Tensor:
    """A 1-D self-organizing map of K units (MiniSom, https://github.com/JustGlowing/minisom):
    Gaussian neighbourhood of initial width K/8 units shrinking to 1, learning rate 0.5
    decaying asymptotically, random rows, weights started on the data's first principal
    axis (fitted on a 10,000-row sample). Widths K/8 and K/4 were tried on the ci
    mixture; K/8 gave the lower error."""
    import warnings

    from minisom import MiniSom

    data = x.numpy().astype(np.float64)
    som = MiniSom(1, K, x.shape[1], sigma=K / 8, learning_rate=0.5, neighborhood_function="gaussian",
                  sigma_decay_function="inverse_decay_to_one", random_seed=seed)
    sample = data[np.random.default_rng(seed).choice(len(data), min(len(data), 10_000), replace=False)]
    with warnings.catch_warnings():  # "PCA initialization inappropriate" for a 1-row map: the 1st axis is what we want
        warnings.simplefilter("ignore", UserWarning)
        som.pca_weights_init(sample)
    som.train(data, som_iterations(len(data)), random_order=True)
    return torch.from_numpy(som.get_weights().reshape(K, -1)).float()


# -- data ----------------------------------------------------------------------


def load_data(size: str, data_dir: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The rows, and the mixture's cluster means (None for the demo latents)."""
    if size == "demo":
        from sfvq_ext.commands.generators import open_generator

        return open_generator("demo").sample_latents(65_536, seed=0).float(), None
    spec = SIZES[size]
    folder = data_dir / f"mixture-{size}"
    if not folder.is_dir() or not any(folder.glob("*.npy")):
        print(f"writing {spec['rows']} x {spec['dim']} rows to {folder}", flush=True)
        write_shards(folder, spec["rows"], spec["dim"], spec["shards"], seed=0)
    source = NpyShards(folder)
    return source.rows(torch.arange(source.num_rows)), torch.from_numpy(Mixture(spec["dim"], seed=0).means)


# -- the run -------------------------------------------------------------------


def run_size(size: str, data_dir: Path, seeds: int, quiet: bool) -> list[dict]:
    x, means = load_data(size, data_dir)
    bits = BITS[size]
    K = 2**bits
    rows = []
    methods = [(label, kw) for label, kw in SFVQ_RUNS.items() if not (size == "large" and label in LARGE_SKIPS)]
    for seed in range(seeds):
        for label, kw in methods:
            kw = dict(kw)
            start = time.perf_counter()
            with bridges_shortened(kw.pop("shorten_bridges", True)):
                module = sfvq_ext.fit(x, bits, seed=seed, progress=not quiet, **kw)
            seconds = time.perf_counter() - start
            rows.append({"size": size, "method": label, "seed": seed, "seconds": seconds,
                         "steps": sum(h["steps"] for h in module.history), **measures(x, module.codebook, means)})
            if seed == 0 and label in ("SFVQ default (new)", "SFVQ, defaults before (authors' schedule, batch 256)"):
                tag = "new" if "new" in label else "before"
                plot_fit(module, x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:5000]],
                         RESULTS / f"fit_quality_{size}_{tag}.png")
            print(rows[-1], flush=True)
        for label, method in (("MiniBatchKMeans", fit_kmeans), ("1-D SOM (MiniSom)", fit_som)):
            start = time.perf_counter()
            codebook = method(x, K, seed)
            rows.append({"size": size, "method": label, "seed": seed, "seconds": time.perf_counter() - start,
                         "steps": None, **measures(x, codebook, means)})
            print(rows[-1], flush=True)
    return rows


def table(rows: list[dict], size: str, x_shape: tuple) -> list[str]:
    bits = BITS[size]
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"### {size}: {x_shape[0]:,} x {x_shape[1]} rows, {2**bits} vectors ({bits} bits), "
             f"{'mean of seeds ' + ', '.join(map(str, seeds)) if len(seeds) > 1 else 'seed 0'}", "",
             f"| method | curve MSE | vertex MSE | segments in use | perplexity | order | clusters reached "
             f"(of {CLUSTERS}) | fit time (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        mean = {k: sum(r[k] for r in mine) / len(mine) for k in ("curve", "vertex", "used", "perplexity", "order", "seconds")}
        spread = max(r["curve"] for r in mine) - min(r["curve"] for r in mine)
        curve = f"{mean['curve']:.4f}" + (f" ± {spread / 2:.4f}" if len(mine) > 1 else "")
        clusters = "–" if mine[0]["clusters"] is None else f"{sum(r['clusters'] for r in mine) / len(mine):.1f}"
        lines.append(f"| {method} | {curve} | {mean['vertex']:.4f} | {mean['used']:.0f} of {2**bits - 1} | "
                     f"{mean['perplexity']:.1f} | {mean['order']:.3f} | {clusters} | {mean['seconds']:.1f} |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=["ci", "large", "demo"], default=["ci", "demo", "large"])
    parser.add_argument("--seeds", type=int, default=None, help="seeds per method (default: 3, 1 for large)")
    parser.add_argument("--data-dir", default="data", help="where the mixture shards are written (default: data/)")
    parser.add_argument("--out", default=str(RESULTS / "fit_quality.md"))
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    lines = ["# Fit quality: SFVQ's recipes against k-means and a 1-D SOM", "",
             f"- machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
             f"torch {torch.__version__}; date {datetime.date.today()}",
             f"- command: `python benchmarks/fit_quality.py --sizes {' '.join(args.sizes)}"
             + (f" --seeds {args.seeds}" if args.seeds else "") + "`",
             "- measures (see the script's docstring): MSE per component over every training row; order = mean "
             "distance of consecutive vectors / mean distance of all pairs (1: none)", ""]
    for size in args.sizes:
        seeds = args.seeds or (1 if size == "large" else 3)
        rows = run_size(size, Path(args.data_dir), seeds, args.quiet)
        shape = (SIZES[size]["rows"], SIZES[size]["dim"]) if size != "demo" else (65_536, 64)
        lines += table(rows, size, shape)
        Path(args.out).write_text("\n".join(lines))  # after every size: a long run keeps what it measured
    print("\n".join(lines))


if __name__ == "__main__":
    main()
