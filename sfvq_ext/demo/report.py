"""``sfvq demo``: fit SFVQ on the shipped generator's W space and write a static
HTML report of what the curve found (codebook in order, edits along segments,
an augmentation set, GANSpace and SeFa on the same latents, probe readings)."""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import directions, fit, save
from ..checkpoint import atomic_write_bytes
from ..fit_report import plot_fit
from ..interpret import (augment_segment, draw_atlas, edit_grid, factor_tracks, ganspace_directions, render_codebook,
                         sefa_directions)
from . import load_generator, load_probe, world
from .measure import FactorScores, describe, edit_step, factor_changes, method_score

STRENGTHS = (-2.0, -1.0, 0.0, 1.0, 2.0)  # in edit steps (a quarter of the RMS spread of W)


def run_demo(out_dir, *, bits: int = 6, seed: int = 0, epochs: int = 5, samples_per_epoch: int = 32768,
             progress: bool = True, generator_path=None, probe_path=None) -> Path:
    """Write the demo into ``out_dir`` and return the path of its ``index.html``
    (``generator_path`` / ``probe_path``: other weights than the shipped ones)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    stages = tqdm(total=8, desc="sfvq demo", unit="stage", disable=not progress)
    adapter = load_generator(generator_path)
    probe = load_probe(probe_path)
    G = adapter.G

    stages.set_postfix_str("fitting SFVQ on W")
    curve = fit(adapter.latent_sampler(), bits, epochs=epochs, batch_size=256, samples_per_epoch=samples_per_epoch,
                seed=seed, progress=progress)
    save(curve, out / "curve.safetensors")
    # so that `sfvq render/edit/augment/explore OUT` find the generator, as after `sfvq fit --generator`
    spec = "demo" if generator_path is None else f"demo:{Path(generator_path).resolve()}"
    atomic_write_bytes(out / "generator.json", json.dumps({"spec": spec}, indent=2).encode())
    sample = adapter.sample_latents(4096, seed=seed + 1)
    plot_fit(curve, sample, out / "fit.png")
    stages.update()

    stages.set_postfix_str("rendering the codebook")
    codebook = curve.codebook.detach()
    codebook_images = render_codebook(adapter, codebook, out / "codebook.png", columns=16, scale=3, progress=False)
    stages.update()

    stages.set_postfix_str("the panoptic atlas")
    tracks = factor_tracks(adapter, codebook, FactorScores(probe), images=codebook_images, progress=False)
    draw_atlas(tracks, codebook_images, out / "atlas.png", title="panoptic atlas: the factor probe on every codebook vector")
    stages.update()

    stages.set_postfix_str("measuring every direction with the probe")
    latents = adapter.sample_latents(32, seed=seed + 2)
    step = edit_step(sample)
    seg_dirs = directions(codebook)
    gan_dirs, _ = ganspace_directions(sample, k=8)
    sefa_dirs, _ = sefa_directions(G, k=8)
    changes = {name: factor_changes(adapter, probe, latents, dirs, step)
               for name, dirs in (("SFVQ", seg_dirs), ("GANSpace", gan_dirs), ("SeFa", sefa_dirs))}
    stages.update()

    stages.set_postfix_str("edit grids")
    rows = latents[:4]
    strengths = [s * step for s in STRENGTHS]
    active = changes["SFVQ"].sum(1).argsort(descending=True)[:3].tolist()
    edits = []
    for i in active:
        name = f"edit_segment_{i}.png"
        edit_grid(adapter, rows, seg_dirs[i], strengths, out / name, scale=3, progress=False)
        edits.append((name, f"SFVQ segment {i} (c<sub>{i}</sub> → c<sub>{i + 1}</sub>): changes mostly "
                            f"{html.escape(describe(changes['SFVQ'][i]))}"))
    baselines = []
    for method, dirs in (("GANSpace", gan_dirs), ("SeFa", sefa_dirs)):
        for k in range(3):
            name = f"edit_{method.lower()}_{k}.png"
            edit_grid(adapter, rows, dirs[k], strengths, out / name, scale=3, progress=False)
            baselines.append((name, f"{method} component {k}: changes mostly {html.escape(describe(changes[method][k]))}"))
    stages.update()

    stages.set_postfix_str("augmentation set")
    # the longest segment: its two ends differ most, so its points span the most variation
    longest = int((codebook[1:] - codebook[:-1]).norm(dim=1).argmax())
    augment = augment_segment(adapter, codebook, longest, 8, out / "augment", scale=3, progress=False)
    stages.update()

    stages.set_postfix_str("the explorer page")
    from ..explore import write_explorer

    # the factor probe enters the explorer as any user's probe would
    write_explorer(adapter, codebook, out / "explore", latents=adapter.sample_latents(3, seed=seed + 3), strength=step,
                   probe=FactorScores(probe), top=8, title="SFVQ curve explorer: the demo's shape-world StyleGAN2",
                   progress=False)
    stages.update()

    scores = {m: method_score(c) for m, c in changes.items()}
    record = {"bits": bits, "seed": seed, "edit_step": step, "seconds": round(time.perf_counter() - started),
              "scores": {m: {"dominance": d, "total_change": t} for m, (d, t) in scores.items()},
              "segments": [describe(row) for row in changes["SFVQ"]],
              "projection_mse": [h["projection_mse"] for h in curve.history],
              "panoptic": tracks.panoptic_by_name(),
              "generator": G.training_info}
    atomic_write_bytes(out / "demo.json", json.dumps(record, indent=2).encode())
    page = _page(curve, record, edits, baselines, Path(augment["sheet"]).relative_to(out), longest, changes["SFVQ"],
                 tracks.most_ordered()[:3])
    atomic_write_bytes(out / "index.html", page.encode())
    stages.update()
    stages.close()
    return out / "index.html"


def _figure(src, caption: str) -> str:
    return f'<figure><img src="{html.escape(str(src))}" alt=""><figcaption>{caption}</figcaption></figure>'


def _page(curve, record, edits, baselines, sheet, sheet_segment, seg_changes, most_ordered) -> str:
    K = curve.current_codebook_size
    ordered = ("Most ordered: " + ", ".join(f"{n} ({v:.2f})" for n, v in most_ordered) + ".") if most_ordered else ""
    score_rows = "".join(f"<tr><td>{m}</td><td>{s['dominance']:.2f}</td><td>{s['total_change']:.3f}</td></tr>"
                         for m, s in record["scores"].items())
    segment_rows = "".join(f"<tr><td>{i}</td><td>{html.escape(d)}</td><td>{seg_changes[i].sum():.3f}</td></tr>"
                           for i, d in enumerate(record["segments"]))
    factors = ", ".join(world.FACTORS)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sfvq demo</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
img {{ image-rendering: pixelated; max-width: 100%; border: 1px solid #ccc; }}
figure {{ margin: 1em 0 2em; }} figcaption {{ color: #444; margin-top: .4em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: .2em .6em; text-align: left; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(330px, 1fr)); gap: 0 1.5em; }}
</style></head><body>
<h1>Space-filling vector quantization of a StyleGAN2's W space</h1>
<p>The generator shipped with sfvq_ext draws 32&times;32 shapes whose factors are known ({factors}).
SFVQ fitted a curve of {K} codebook vectors through its W space ({record['bits']} bits,
{record['seconds']} s in all). Each row of an edit grid is one sampled image; columns move it along one
direction by {', '.join(f'{s:+g}' for s in STRENGTHS)} steps of {record['edit_step']:.2f}
(a quarter of the RMS spread of W). A factor probe reads the factors back from the images.</p>

<p><b><a href="explore/index.html">Open the interactive explorer</a></b>: a slider along the curve, the codebook
as clickable thumbnails, and the segments ranked by how much and how locally they change the image, each with its
suggested W+ layer range, layer-group toggles and what the factor probe reads in it.</p>

<h2>The codebook in curve order</h2>
{_figure('codebook.png', f'All {K} codebook vectors rendered in order, row by row: neighbours on the curve look alike, so the strip shows which stretch of W holds which shapes, colours and positions.')}

<h2>The panoptic atlas</h2>
{_figure('atlas.png', 'Every score of the factor probe for every codebook vector, in curve order, under the codebook strip (each track scaled to its own range). Beside each name its panoptic score: the mean change between neighbouring vectors over that between random pairs (1: no order; lower: the curve sweeps that factor in order). ' + html.escape(ordered))}

<h2>Editing along curve segments</h2>
<p>The three segments whose edits change the images most, as judged by the probe.</p>
<div class="grid">{''.join(_figure(src, cap) for src, cap in edits)}</div>

<h2>An augmentation set</h2>
{_figure(sheet, f'Eight points evenly spaced along segment {sheet_segment} (the longest), ends included: controlled variations between two neighbouring codebook vectors.')}

<h2>Baselines on the same latents</h2>
<div class="grid">{''.join(_figure(src, cap) for src, cap in baselines)}</div>

<h2>How disentangled are the directions?</h2>
<p>For each method's 8 most active directions: the share of the probe-measured change that falls on the single
most-changed factor (1 = one factor alone), and the mean total change. One fit, one seed, all layers edited,
SFVQ's 8 of its 63 segments against GANSpace's and SeFa's first 8: a glance, not the comparison, which is
<code>benchmarks/interpretability.py</code> (3 seeds, as many candidates for each method, with and without
layer ranges; its numbers are in the package's docs/gan.md).</p>
<table><tr><th>method</th><th>dominance</th><th>total change</th></tr>{score_rows}</table>

<h2>The fit</h2>
{_figure('fit.png', 'Training loss per epoch and stage (stars: exact-projection MSE), the curve over W samples in their first two principal components, and the hits per segment.')}

<h2>Every segment, read by the probe</h2>
<table><tr><th>segment</th><th>changes mostly</th><th>total change</th></tr>{segment_rows}</table>
</body></html>
"""
