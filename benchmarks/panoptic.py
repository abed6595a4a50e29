"""The panoptic score of ordered codebooks on the demo generator's W latents: SFVQ's
curve, a 1-D self-organizing map (MiniSom) and k-means centroids ordered by a short
tour, all with the same K on the same latents, 3 seeds. Writes
benchmarks/results/panoptic.md.

    python benchmarks/panoptic.py            # 3 seeds, K = 64; about a minute on 2 CPU cores
    python benchmarks/panoptic.py --quick    # 1 seed, no file written

The paper's first claim is that the ordered codebook tells which part of the latent
space holds which generative factor. Measured here per factor: every codebook vector
is rendered and read by the demo's factor probe (:func:`sfvq_ext.interpret.factor_tracks`),
and the panoptic score is the mean change of that factor between neighbouring
codebook vectors over its mean change between random pairs (1: no order; lower: the
codebook sweeps the factor in order; :func:`sfvq_ext.interpret.panoptic_score`).
Shape is read as the probe's three class probabilities (halved); their scores are
averaged into one "shape" column.

Contenders (same K, same 65,536 W latents of the shipped generator):
  SFVQ          sfvq_ext.fit, the default recipe
  1-D SOM       MiniSom, as in benchmarks/fit_quality.py (its fit_som)
  k-means tour  MiniBatchKMeans centroids (fit_quality's fit_kmeans), visited in the
                order of a short open tour: nearest neighbour from every start, the
                shortest kept, then 2-opt reversals until none shortens it
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

import sfvq_ext
from sfvq_ext.demo import load_generator, load_probe
from sfvq_ext.demo.measure import FactorScores
from sfvq_ext.interpret import factor_tracks

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fit_quality import fit_kmeans, fit_som  # noqa: E402  (the same baselines as the fit benchmark)

RESULTS = Path(__file__).with_name("results")
METHODS = ("SFVQ", "1-D SOM", "k-means tour")


def tour_length(points: torch.Tensor, order: list[int]) -> float:
    return float((points[order[1:]] - points[order[:-1]]).norm(dim=1).sum())


def short_tour(points: torch.Tensor) -> list[int]:
    """An open path through all rows of ``points``: the shortest nearest-neighbour path
    over every start, improved by 2-opt reversals until none shortens it."""
    d = torch.cdist(points.double(), points.double())
    K = len(points)
    best = None
    for start in range(K):
        order, left = [start], set(range(K)) - {start}
        while left:
            here = order[-1]
            nxt = min(left, key=lambda j: d[here, j].item())
            order.append(nxt)
            left.remove(nxt)
        if best is None or tour_length(points, order) < tour_length(points, best):
            best = order
    improved = True
    while improved:
        improved = False
        for i in range(K - 1):
            for j in range(i + 2, K):
                # reverse best[i+1 .. j]: edges (i, i+1) and (j, j+1) become (i, j) and (i+1, j+1)
                before = d[best[i], best[i + 1]] + (d[best[j], best[j + 1]] if j + 1 < K else 0)
                after = d[best[i], best[j]] + (d[best[i + 1], best[j + 1]] if j + 1 < K else 0)
                if after < before - 1e-12:
                    best[i + 1 : j + 1] = best[i + 1 : j + 1][::-1]
                    improved = True
    return best


def codebook_of(method: str, w: torch.Tensor, bits: int, seed: int) -> torch.Tensor:
    K = 2**bits
    if method == "SFVQ":
        return sfvq_ext.fit(w, bits, seed=seed, progress=False).codebook.detach()
    if method == "1-D SOM":
        return fit_som(w, K, seed)
    centroids = fit_kmeans(w, K, seed)
    return centroids[short_tour(centroids)]


def factor_scores(tracks) -> dict[str, float]:
    """Panoptic score per factor; the three shape probabilities averaged into "shape"."""
    scores = dict(zip(tracks.names, tracks.panoptic_scores().tolist()))
    shape = [v for n, v in scores.items() if n.startswith("shape:")]
    return {"shape": statistics.mean(shape), **{n: v for n, v in scores.items() if not n.startswith("shape:")}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--bits", type=int, default=6)
    p.add_argument("--latents", type=int, default=65_536)
    p.add_argument("--quick", action="store_true", help="1 seed, no file written")
    args = p.parse_args()
    if args.quick:
        args.seeds = 1
    adapter = load_generator()
    probe = FactorScores(load_probe())
    w = adapter.sample_latents(args.latents, seed=0).float()
    results: dict[str, list[dict]] = {m: [] for m in METHODS}
    seconds: dict[str, list[float]] = {m: [] for m in METHODS}
    for seed in range(args.seeds):
        for method in METHODS:
            started = time.perf_counter()
            codebook = codebook_of(method, w, args.bits, seed)
            seconds[method].append(time.perf_counter() - started)
            scores = factor_scores(factor_tracks(adapter, codebook, probe, progress=False))
            results[method].append(scores)
            print(f"seed {seed} {method:13s} " + "  ".join(f"{n} {v:.3f}" for n, v in scores.items()), flush=True)
    if args.quick:
        return
    factors = list(results["SFVQ"][0])

    def cell(method, factor):
        values = [r[factor] for r in results[method]]
        return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"

    def best(factor):
        return min(METHODS, key=lambda m: statistics.mean(r[factor] for r in results[m]))

    def verdict(other, factor):
        """SFVQ against ``other``: on par when the means differ by no more than the larger seed sd."""
        a, b = ([r[factor] for r in results[m]] for m in ("SFVQ", other))
        spread = max(statistics.stdev(a), statistics.stdev(b)) if len(a) > 1 else 0.0
        diff = statistics.mean(a) - statistics.mean(b)
        return "on par" if abs(diff) <= spread else ("better" if diff < 0 else "worse")

    info = load_generator().G.training_info
    lines = [
        "# Panoptic score: which ordered codebook sweeps each factor in order",
        "",
        f"- command: `python benchmarks/panoptic.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`",
        f"- machine: {platform.machine()}, torch {torch.__version__}; date {datetime.date.today()}",
        f"- data: {args.latents} W latents of the shipped shape-world StyleGAN2 (seed 0; trained "
        f"{info.get('steps')} steps, style mixing {info.get('style_mixing_prob', 0)}); K = {2**args.bits} for every "
        f"method; {args.seeds} seeds (the methods' own seeds)",
        "- score per factor: mean |change| of the probe's reading between neighbouring codebook vectors over the mean "
        "|change| between all pairs (1 = no order, lower = better); shape: the mean over the three class probabilities",
        "- SFVQ vs another: on par when the means differ by no more than the larger of the two seed standard "
        "deviations, else better (lower) or worse",
        "",
        "| factor | " + " | ".join(METHODS) + " | lowest | " + " | ".join(f"SFVQ vs {m}" for m in METHODS[1:]) + " |",
        "|---|" + "---|" * (len(METHODS) + 1 + len(METHODS) - 1),
    ]
    for factor in factors:
        lines.append(f"| {factor} | " + " | ".join(cell(m, factor) for m in METHODS) + f" | {best(factor)} | "
                     + " | ".join(verdict(m, factor) for m in METHODS[1:]) + " |")
    means = {m: statistics.mean(statistics.mean(r.values()) for r in results[m]) for m in METHODS}
    lines.append("| **mean over factors** | " + " | ".join(f"{means[m]:.3f}" for m in METHODS)
                 + f" | {min(METHODS, key=means.get)} |" + " |" * (len(METHODS) - 1))
    lines += ["", "Fit time (s, mean): " + ", ".join(f"{m} {statistics.mean(seconds[m]):.1f}" for m in METHODS), ""]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "panoptic.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
