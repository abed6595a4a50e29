"""Offline interpretability benchmark on the shipped shape-world StyleGAN2, whose
generative factors are known: how disentangled are SFVQ's segment directions,
GANSpace components and SeFa directions? And SFVQ's quantization error per bitrate.

    python benchmarks/interpretability.py              # 3 seeds, writes results/interpretability.md
    python benchmarks/interpretability.py --seeds 1

For every direction: 64 sampled W latents move by one fixed step (a quarter of
the RMS spread of W; directions are unit vectors), and the factor probe reads the 7
factors before and after. Dominance = the share of the total change on the
most-changed factor (1 = one factor alone); a method's score is the mean
dominance over its `--top` most active directions (largest total change).
Candidates: all 2^bits - 1 SFVQ segments, the top 2^bits - 1 GANSpace
components and SeFa directions (the same number for each method).

With and without layer ranges (issue 16): every candidate of every method is
scored editing all W+ layers and editing only its suggested layer range, for each
`--coverages` value (sfvq_ext.interpret.layer_profiles: single-layer edits of
`--profile-latents` other latents measured in multi-scale pixels; the shortest
contiguous range holding that share of the change: 0.9, the rule before, and 0.5,
the package's default). The same rule, the same step and the same latents for all
three methods; the probe that scores is not used to choose the ranges.
`--generator PATH` scores other weights (e.g. the generator shipped before). As an
upper reference, each method's most active directions are also
scored on the contiguous range the scoring probe itself likes best (the highest
dominance of all 36 ranges of the 8 layers): what a range could give at most.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
from pathlib import Path

import torch

import sfvq_ext
from sfvq_ext.interpret import ganspace_directions, sefa_directions
from sfvq_ext.demo import load_generator, load_probe, world
from sfvq_ext.demo.measure import dominance, edit_step, factor_changes, method_score
from sfvq_ext.interpret import LayerProfile, layer_profiles


METHODS = ("SFVQ segments", "GANSpace", "SeFa")


def run_seed(adapter, probe, seed: int, bits: int, top: int, n_latents: int, n_profile: int,
             coverages: list[float]) -> dict:
    sample = adapter.sample_latents(10_000, seed=1000 + seed)
    curve = sfvq_ext.fit(adapter.latent_sampler(), bits, epochs=3, batch_size=256, samples_per_epoch=16384,
                         seed=seed, progress=False)
    n = 2**bits - 1
    candidates = {"SFVQ segments": sfvq_ext.directions(curve.codebook.detach()),
                  "GANSpace": ganspace_directions(sample, k=n)[0],
                  "SeFa": sefa_directions(adapter.G, k=n)[0]}
    latents = adapter.sample_latents(n_latents, seed=2000 + seed)
    profile_latents = adapter.sample_latents(n_profile, seed=3000 + seed)
    step = edit_step(sample)
    result = {"mse": [h["projection_mse"] for h in curve.history]}
    for name, dirs in candidates.items():
        changes = factor_changes(adapter, probe, latents, dirs, step)
        result[name] = method_score(changes, top=top)
        profiles = layer_profiles(adapter, profile_latents, dirs, step, progress=False)
        leading = changes.sum(1).argsort(descending=True)[:top]
        for coverage in coverages:  # one set of profiles, a range per coverage
            suggested = [LayerProfile.from_change(p.change, coverage) for p in profiles]
            ranged = factor_changes(adapter, probe, latents, dirs, step, layers=[s.layers for s in suggested])
            chosen = ranged.sum(1).argsort(descending=True)[:top]
            result[f"{name} (ranges {coverage})"] = method_score(ranged, top=top) + (
                statistics.mean(len(suggested[int(i)].layers) for i in chosen),)
            # where the leading directions act: their suggested ranges, most active first
            result[f"{name} (labels {coverage})"] = [suggested[int(i)].label for i in leading]
        result[name + " (best range)"] = best_range_score(adapter, probe, latents, dirs, step, changes, top)
    return result


def best_range_score(adapter, probe, latents, dirs, step, changes, top: int) -> tuple[float, float, float]:
    """The upper reference: the ``top`` most active directions (all layers edited), each on the
    contiguous layer range where the scoring probe finds the highest dominance.
    (mean dominance, mean total change, mean range length)."""
    L = adapter.num_layers
    ranges = [range(a, b) for a in range(L) for b in range(a + 1, L + 1)]
    chosen = dirs[changes.sum(1).argsort(descending=True)[:top]]
    per_range = torch.stack([factor_changes(adapter, probe, latents, chosen, step, layers=r) for r in ranges])  # R, top, F
    scores = dominance(per_range.reshape(-1, per_range.shape[-1])).reshape(len(ranges), -1)
    best = scores.argmax(0)
    picked = per_range[best, torch.arange(len(chosen))]
    return (dominance(picked).mean().item(), picked.sum(1).mean().item(),
            statistics.mean(len(ranges[int(i)]) for i in best))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--bits", type=int, default=5)
    p.add_argument("--top", type=int, default=8)
    p.add_argument("--latents", type=int, default=32, help="latents each direction is scored on")
    p.add_argument("--profile-latents", type=int, default=8, help="latents the layer profiles are measured on")
    p.add_argument("--generator", default=None, help="weights file (default: the shipped one)")
    p.add_argument("--coverages", type=float, nargs="+", default=[0.9, 0.5],
                   help="suggested range: the shortest contiguous range with this share of the profile")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "interpretability.md"))
    args = p.parse_args()
    adapter, probe = load_generator(args.generator), load_probe()
    runs = []
    for seed in range(args.seeds):
        runs.append(run_seed(adapter, probe, seed, args.bits, args.top, args.latents, args.profile_latents,
                             args.coverages))
        print(seed, runs[-1], flush=True)

    def mean_sd(values):
        return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"

    lines = [
        "# Interpretability benchmark: SFVQ vs GANSpace vs SeFa on a generator with known factors",
        "",
        f"- generator: {'the shipped shape-world StyleGAN2' if args.generator is None else args.generator} (W of 64 "
        f"dimensions); probe: the shipped factor probe",
        f"- machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"date {datetime.date.today()}",
        f"- command: `python benchmarks/interpretability.py --seeds {args.seeds} --bits {args.bits} --top {args.top} "
        f"--latents {args.latents} --profile-latents {args.profile_latents} "
        f"--coverages {' '.join(str(c) for c in args.coverages)}"
        + (f" --generator {args.generator}" if args.generator else "") + "`",
        f"- SFVQ: {2**args.bits} codebook vectors ({2**args.bits - 1} segments); the same number of GANSpace / SeFa "
        f"candidates; score over each method's {args.top} most active directions; each direction scored on "
        f"{args.latents} latents; mean ± sd over {args.seeds} seeds",
        f"- layer ranges: per direction the suggested range (sfvq_ext.interpret.layer_profiles on "
        f"{args.profile_latents} other latents, multi-scale pixel change; the shortest contiguous range holding the "
        f"given share of it: sfvq_ext.interpret.suggest_layers), the same rule for every method; the generator has "
        f"8 W+ layers; the upper reference: the range the scoring probe likes best, per direction",
        "",
        "| method | layers edited | dominance (1 = one factor) | mean total factor change | mean range length (top) |",
        "|---|---|---|---|---|",
    ]
    for name in METHODS:
        lines.append(f"| {name} | all 8 | {mean_sd([r[name][0] for r in runs])} | "
                     f"{mean_sd([r[name][1] for r in runs])} | 8 |")
        for coverage in args.coverages:
            ranged = f"{name} (ranges {coverage})"
            lines.append(f"| {name} | suggested range, {coverage:.0%} of the change | {mean_sd([r[ranged][0] for r in runs])} | "
                         f"{mean_sd([r[ranged][1] for r in runs])} | {mean_sd([r[ranged][2] for r in runs])} |")
        best = name + " (best range)"
        lines.append(f"| {name} | best range for the probe (upper reference) | {mean_sd([r[best][0] for r in runs])} | "
                     f"{mean_sd([r[best][1] for r in runs])} | {mean_sd([r[best][2] for r in runs])} |")
    for coverage in args.coverages:
        labels = [f"{name} (labels {coverage})" for name in METHODS]
        distinct = len({label for r in runs for key in labels for label in r[key]})
        lines += ["", f"Suggested ranges ({coverage:.0%} of the change) of each method's {args.top} most active "
                  f"directions, most active first, per seed ({distinct} distinct ranges in all):", "",
                  "| method | seed | suggested ranges |", "|---|---|---|"]
        for name, key in zip(METHODS, labels):
            for seed, r in enumerate(runs):
                lines.append(f"| {name} | {seed} | {', '.join(r[key])} |")
    variants = [m + v for m in METHODS for v in ("", *(f" (ranges {c})" for c in args.coverages))]
    ranking = sorted(variants, key=lambda m: -statistics.mean(r[m][0] for r in runs))
    info = adapter.G.training_info
    lines += ["", f"Ranking by dominance (without the upper reference): {' > '.join(ranking)}. A direction spread "
              f"evenly over the {len(world.FACTORS)} factors scores 1/{len(world.FACTORS)} = "
              f"{1 / len(world.FACTORS):.3f}. The generator: {info.get('steps')} steps, style mixing "
              f"{info.get('style_mixing_prob', 0)}."]
    lines += ["", "Exact-projection MSE of the SFVQ curve on W, per bitrate (fit stages, mean over seeds):", "",
              "| bits | " + " | ".join(str(b) for b in range(2, args.bits + 1)) + " |",
              "|---|" + "---|" * (args.bits - 1),
              "| MSE | " + " | ".join(f"{statistics.mean(r['mse'][i] for r in runs):.4f}"
                                   for i in range(args.bits - 1)) + " |", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
