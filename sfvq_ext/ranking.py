"""Which segments of a fitted curve are worth looking at? Segments ranked by how
much they change the image and how concentrated the change is (in W+ layers, and
in a probe's scores when there is one); long "jump" segments are flagged."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .layer_profile import DEFAULT_COVERAGE, LayerProfile, image_change, layer_profiles

DEFAULT_JUMP_FACTOR = 3.0


def segment_lengths(codebook: Tensor) -> Tensor:
    """``||c_{i+1} - c_i||`` for every segment, float64 ``(K-1,)``."""
    if not isinstance(codebook, Tensor) or codebook.dim() != 2 or codebook.shape[0] < 2 \
            or not codebook.is_floating_point():
        got = tuple(codebook.shape) if isinstance(codebook, Tensor) else type(codebook).__name__
        raise ValueError(f"codebook must be a floating-point (K, D) tensor with K >= 2, got {got}")
    c = codebook.detach().double()
    return (c[1:] - c[:-1]).norm(dim=1).cpu()


def jump_segments(codebook: Tensor, factor: float = DEFAULT_JUMP_FACTOR) -> Tensor:
    """Segments that jump: longer than ``factor`` times the median segment length
    (bool ``(K-1,)``). A trained curve's segments join neighbouring codebook vectors;
    one much longer than the rest crosses between regions of the latent space (it
    bridges two clusters, through where the data is thin), so its direction is the
    difference between two regions, not an edit. Raises ``ValueError`` for a bad
    codebook or a factor <= 1."""
    if not factor > 1:
        raise ValueError(f"jump_segments: factor must be > 1, got {factor}")
    lengths = segment_lengths(codebook)
    return lengths > factor * lengths.median()


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
    from .interpret import directions as unit_directions
    from .probe import probe_table

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
