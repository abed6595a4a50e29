"""``sfvq explore``: a self-contained static page for looking through a fitted curve.

The page (``index.html`` plus PNGs beside it; opens from disk, no server, no
network, no scripts from elsewhere) holds: a slider along the curve coordinate
showing the rendered image at that point (pre-rendered frames, at most
``max_frames``), the codebook as a strip of clickable thumbnails (lazy-loaded) that
move the slider, and the ranked segments (:func:`sfvq_ext.interpret.rank_segments`),
each with its edit grid on its suggested W+ layer range and toggles for the other
layer groups (all, coarse, middle, fine; pre-rendered), plus, when a probe is given,
the probe table and the panoptic atlas: every score the probe reads, as a track under
the codebook strip (:func:`sfvq_ext.interpret.factor_tracks`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from ..checkpoint import atomic_write_bytes
from ..interpret import FactorTracks, call_probe, edit_grid, image_grid, layer_groups, rank_segments, save_png, to_uint8
from ..interpret import probe_names as score_names  # write_explorer's argument probe_names is the user's list
from .page import render_page

STEPS = (-2.0, -1.0, 0.0, 1.0, 2.0)  # edit grid columns, in edit steps


def default_strength(adapter, n: int = 2000, seed: int = 12345, **sampling) -> float:
    """One edit step: a quarter of the RMS distance of ``n`` sampled latents from their
    mean (the demo benchmark's step), in latent units."""
    sample = adapter.sample_latents(n, seed=seed, **sampling).double()
    return 0.25 * (sample - sample.mean(0)).norm(dim=1).pow(2).mean().sqrt().item()


def _resized(images: Tensor, px: int) -> Tensor:
    """Images (n, 3, H, W) area-downsampled so their longer side is at most ``px``."""
    side = max(images.shape[-2:])
    if side <= px:
        return images
    size = (max(1, images.shape[-2] * px // side), max(1, images.shape[-1] * px // side))
    return F.interpolate(images, size=size, mode="area")


def _render_batches(adapter, latents: Tensor, batch_size: int, progress: bool, desc: str):
    """Render ``latents`` batch by batch (yields ``(start, images)``), so that one
    batch of full-size renders is held at a time: K = 1024 renders of 1024 px would
    need 12 GiB held together."""
    bar = tqdm(total=len(latents), desc=desc, unit="image", disable=not progress)
    for start in range(0, len(latents), batch_size):
        images = adapter.render(latents[start : start + batch_size], batch_size=batch_size, progress=False)
        yield start, images
        bar.update(len(images))
    bar.close()


def frame_coordinates(K: int, max_frames: int = 256, per_segment: int = 4) -> Tensor:
    """Curve coordinates of the slider's frames, float64: ``per_segment`` frames per
    segment (every vertex a frame) while that stays within ``max_frames``, else
    ``max_frames`` evenly spaced over ``[0, K-1]``. Ends always included."""
    if K < 2 or max_frames < 2 or per_segment < 1:
        raise ValueError(f"frame_coordinates: need K >= 2, max_frames >= 2, per_segment >= 1; got {K}, {max_frames}, "
                         f"{per_segment}")
    n = min(max_frames, per_segment * (K - 1) + 1)
    return torch.linspace(0, K - 1, n, dtype=torch.float64)


@torch.no_grad()
def write_explorer(adapter, codebook: Tensor, out_dir, *, latents: Tensor | None = None, strength: float | None = None,
                   probe=None, probe_names=None, probe_groups=None, top: int = 8, profile_top: int = 64,
                   max_frames: int = 256, frames_per_segment: int = 4, frame_px: int = 256, thumb_px: int = 64,
                   grid_px: int = 96, batch_size: int = 16, title: str = "SFVQ curve explorer",
                   progress: bool = True) -> Path:
    """Write the explorer for ``codebook`` (K, D) on ``adapter``'s generator into
    ``out_dir``; returns the path of its ``index.html``.

    ``latents`` (n, D): the rows of every edit grid and the latents the ranking edits
    (default: 3 sampled with seed 0); ``strength``: one edit step in latent units
    (default :func:`default_strength`); grids show ``-2..2`` steps. ``probe``: any
    callable ``images -> (n, F)`` scores (see :func:`sfvq_ext.interpret.probe_table`).
    ``top``: segments shown with grids; ``profile_top``: segments whose layer
    profile the ranking measures. Sizes: frames at most ``frame_px`` pixels a side,
    codebook thumbnails ``thumb_px``, grid tiles ``grid_px`` (larger renders are
    downsampled, smaller ones shown enlarged); at most ``max_frames`` frames, so a
    K = 1024 curve of 1024 px images writes 256 frames of 256 px and 1024
    thumbnails of 64 px, loaded lazily. Raises ``ValueError`` for bad arguments."""
    if not isinstance(codebook, Tensor) or codebook.dim() != 2 or codebook.shape[0] < 2:
        raise ValueError("write_explorer: codebook must be a (K, D) tensor with K >= 2")
    if codebook.shape[1] != adapter.latent_dim:
        raise ValueError(f"write_explorer: codebook has width {codebook.shape[1]}, the generator's latents "
                         f"{adapter.latent_dim}")
    for name, value in (("top", top), ("frame_px", frame_px), ("thumb_px", thumb_px), ("grid_px", grid_px)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"write_explorer: {name} must be a positive int, got {value!r}")
    from .. import decode

    codebook = codebook.detach().cpu()
    K = codebook.shape[0]
    out = Path(out_dir)
    for sub in ("frames", "strip", "grids"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    if latents is None:
        latents = adapter.sample_latents(3, seed=0)
    if strength is None:
        strength = default_strength(adapter)
    stages = tqdm(total=5, desc="sfvq explore", unit="stage", disable=not progress)

    stages.set_postfix_str("frames along the curve")
    coords = frame_coordinates(K, max_frames, frames_per_segment)
    points = decode(coords, codebook.double()).to(torch.promote_types(codebook.dtype, torch.float32))
    frames = []
    for start, images in _render_batches(adapter, points, batch_size, progress, "frames"):
        for k, image in enumerate(to_uint8(_resized(images, frame_px)), start):
            name = f"frames/f{k:04d}.png"
            save_png(image, out / name)
            u = coords[k].item()
            j = min(int(u), K - 2)
            frames.append({"file": name, "u": u, "segment": j, "t": u - j})
    stages.update()

    # One pass over the codebook's renders: thumbnails, and the probe's scores for the atlas.
    stages.set_postfix_str("codebook thumbnails" + ("" if probe is None else " and the probe on every vector"))
    strip, scores = [], []
    for start, images in _render_batches(adapter, codebook, batch_size, progress, "codebook"):
        if probe is not None:
            scores.append(call_probe(probe, images))
        for i, image in enumerate(to_uint8(_resized(images, thumb_px)), start):
            name = f"strip/c{i:04d}.png"
            save_png(image, out / name)
            strip.append({"file": name, "frame": int(torch.argmin((coords - i).abs()))})
    stages.update()

    stages.set_postfix_str("the atlas")
    atlas = None
    if probe is not None:
        scores = torch.cat(scores)
        tracks = FactorTracks(scores, score_names(probe, scores.shape[1], probe_names))
        atlas = {"names": tracks.names, "values": tracks.normalized().tolist(),
                 "low": tracks.scores.min(0).values.tolist(), "high": tracks.scores.max(0).values.tolist(),
                 "panoptic": list(tracks.panoptic_by_name().values())}
    stages.update()

    stages.set_postfix_str("ranking segments")
    ranked = rank_segments(adapter, codebook, latents, strength, probe=probe, probe_names=probe_names,
                           probe_groups=probe_groups, profile_top=max(profile_top, top), batch_size=batch_size,
                           progress=progress)
    stages.update()

    stages.set_postfix_str("edit grids")
    from ..interpret import directions

    dirs = directions(codebook)
    strengths = [s * strength for s in STEPS]
    groups = layer_groups(adapter.num_layers)
    shown = [r for r in ranked if r.profile is not None][:top]
    segments = []
    for r in tqdm(shown, desc="edit grids", unit="segment", disable=not progress):
        variants, files = [], {}
        choices = [("suggested", r.profile.layers)] + [(g, layers) for g, layers in groups.items()]
        for group, layers in choices:
            key = (layers.start, layers.stop)
            if key not in files:
                images = edit_grid(adapter, latents, dirs[r.segment], strengths, None,
                                   layers=layers if adapter.num_layers > 1 else None, batch_size=batch_size,
                                   progress=False)
                tiles = _resized(images, grid_px)
                name = f"grids/seg{r.segment:04d}_W{layers.start}-{layers.stop - 1}.png"
                save_png(image_grid(tiles, len(STEPS), scale=max(1, grid_px // max(tiles.shape[-2:]))), out / name)
                files[key] = name
            variants.append({"group": group, "layers": [layers.start, layers.stop - 1], "file": files[key]})
        segments.append({"segment": r.segment, "score": r.score, "change": r.change, "length": r.length,
                         "layers": [r.profile.layers.start, r.profile.layers.stop - 1], "label": r.profile.label,
                         "share": r.profile.share, "concentration": r.profile.concentration,
                         "profile": r.profile.change.tolist(), "probe_top": r.probe_top,
                         "exclusivity": r.exclusivity, "probe_changes": r.probe_changes, "variants": variants,
                         "frame": int(torch.argmin((coords - (r.segment + 0.5)).abs()))})
    stages.update()
    stages.close()

    data = {"title": title, "K": K, "num_layers": adapter.num_layers, "strength": strength, "steps": list(STEPS),
            "frames": frames, "strip": strip, "segments": segments, "atlas": atlas,
            "jumps": [{"segment": r.segment, "length": r.length} for r in ranked if r.jump],
            "ranking": [{"segment": r.segment, "score": r.score, "change": r.change, "jump": r.jump,
                         "layers": None if r.profile is None else r.profile.label, "probe_top": r.probe_top,
                         "exclusivity": r.exclusivity} for r in ranked]}
    atomic_write_bytes(out / "explore.json", json.dumps(data, indent=1).encode())
    page = out / "index.html"
    atomic_write_bytes(page, render_page(data).encode())
    return page


__all__ = ["write_explorer", "frame_coordinates", "default_strength"]
