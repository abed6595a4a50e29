"""Which segments of a fitted curve are worth looking at? Segments ranked by how
much they change the image and how concentrated the change is (in W+ layers, and
in a probe's scores when there is one); long "jump" segments are flagged."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .change import image_change
from .directions import DEFAULT_JUMP_FACTOR, directions as unit_directions, jump_segments, segment_lengths
from .layer_profile import DEFAULT_COVERAGE, LayerProfile, layer_profiles
from .probe import probe_table


@dataclass
class SegmentRank:
    """One segment's entry in :func:`rank_segments`.

    ``segment`` i (``c_i -> c_{i+1}``); ``length`` ``||c_{i+1} - c_i||``; ``jump``
    (see :func:`jump_segments`); ``change``: mean :func:`image_change` of an all-layer
    edit by the ranking's strength; ``profile``: its :class:`LayerProfile`
    (suggested range), ``None`` when it was not among the profiled candidates;
    ``probe_top`` / ``exclusivity``: the probe score it moves most and that score's
    share (``None`` without a probe); ``score``: ``change * profile.concentration *
    exclusivity`` (exclusivity 1 without a probe; ``None`` when not profiled or a jump)."""

    segment: int
    length: float
    jump: bool
    change: float
    profile: LayerProfile | None = None
    probe_top: str | None = None
    exclusivity: float | None = None
    probe_changes: dict | None = None
    score: float | None = None


@torch.no_grad()
def rank_segments(adapter, codebook: Tensor, latents: Tensor, strength: float, *, probe=None, probe_names=None,
                  probe_groups=None, profile_top: int = 64, coverage: float = DEFAULT_COVERAGE,
                  jump_factor: float = DEFAULT_JUMP_FACTOR, batch_size: int = 16,
                  progress: bool = True) -> list[SegmentRank]:
    """Rank the segments of a fitted curve, best first.

    ``codebook``: ``(K, D)``; ``latents``: ``(n, D)`` the edits start from;
    ``strength``: the edit step in latent units along each segment's unit direction
    (:func:`~sfvq_ext.directions`). Three stages, one progress bar each:

    1. every segment's all-layer edit, rendered and compared with the unedited
       images (``n * (K-1)`` renders): ``change``; jumps flagged (:func:`jump_segments`);
    2. the ``profile_top`` non-jump segments with the largest change get their layer
       profile and suggested range (:func:`~sfvq_ext.interpret.layer_profiles`,
       ``n * num_layers`` renders each);
    3. with ``probe`` (any callable ``images -> (n, F)`` scores; ``probe_names`` /
       ``probe_groups`` as in :func:`~sfvq_ext.interpret.probe_table`), those segments'
       edits within their suggested range are read by it.

    Order: profiled segments by ``score = change * layer concentration *
    probe exclusivity`` (large, local, one thing), then the other non-jump segments
    by change, then the jumps by length. Returns a list of :class:`SegmentRank`.
    Raises ``ValueError`` for a bad codebook, strength or profile_top."""
    lengths = segment_lengths(codebook)
    if not isinstance(strength, (int, float)) or not math.isfinite(strength):
        raise ValueError(f"rank_segments: strength must be a finite number, got {strength!r}")
    if profile_top < 0:
        raise ValueError(f"rank_segments: profile_top must be >= 0, got {profile_top}")
    jumps = jump_segments(codebook, jump_factor)
    dirs = unit_directions(codebook).cpu()
    base = adapter.render(latents, batch_size=batch_size, progress=False)
    entries = []
    for i in tqdm(range(len(dirs)), desc="segment changes", unit="segment", disable=not progress):
        edited = adapter.render(adapter.apply_direction(latents, dirs[i], strength), batch_size=batch_size,
                                progress=False)
        entries.append(SegmentRank(i, float(lengths[i]), bool(jumps[i]), float(image_change(base, edited).mean())))
    candidates = sorted((e for e in entries if not e.jump), key=lambda e: -e.change)[:profile_top]
    if candidates:
        profiles = layer_profiles(adapter, latents, dirs[[e.segment for e in candidates]], strength,
                                  coverage=coverage, batch_size=batch_size, progress=progress)
        for e, p in zip(candidates, profiles):
            e.profile = p
        exclusivity = [1.0] * len(candidates)
        if probe is not None:
            table = probe_table(adapter, probe, latents, dirs[[e.segment for e in candidates]], strength,
                                layers=[e.profile.layers if adapter.num_layers > 1 else None for e in candidates],
                                names=probe_names, groups=probe_groups, labels=[e.segment for e in candidates],
                                batch_size=batch_size, progress=progress)
            exclusivity = table.exclusivity.tolist()
            for e, row in zip(candidates, table.rows()):
                e.probe_top, e.exclusivity, e.probe_changes = row["top"], row["exclusivity"], row["changes"]
        for e, x in zip(candidates, exclusivity):
            e.score = e.change * e.profile.concentration * x
    profiled = sorted((e for e in entries if e.score is not None), key=lambda e: (-e.score, e.segment))
    rest = sorted((e for e in entries if e.score is None and not e.jump), key=lambda e: (-e.change, e.segment))
    jumped = sorted((e for e in entries if e.jump), key=lambda e: (-e.length, e.segment))
    return profiled + rest + jumped
