"""Which W+ layers does a direction act through? The layer profile of an edit and
the contiguous layer range suggested for it.

The paper's authors (and GANSpace's) chose a layer range per direction by hand
(FFHQ: rotation W0-W2, age W3-W7, smile W4-W4, ...). Here the choice is measured:
edit one layer at a time, see how much the image changes, and keep the shortest
contiguous range that holds half of the change (``coverage``): where it acts most.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .change import image_change, probe_change
from .directions import check_directions

# Half the change: a W direction moves every layer a little (on the demo generator even
# the quietest layer holds 1-5% of a direction's profile), so a 90% range spans 7 of 8
# layers whatever the direction does, while the shortest range with half of it is where
# the direction acts most: 2.6-3.0 layers, and higher probe dominance than all layers for
# SFVQ segments, GANSpace and SeFa alike (benchmarks/results/interpretability.md).
DEFAULT_COVERAGE = 0.5


def suggest_layers(profile, coverage: float = DEFAULT_COVERAGE) -> range:
    """The suggested contiguous layer range for a layer profile.

    ``profile``: ``(L,)`` non-negative image change per layer (see
    :func:`layer_profiles`). Rule: the *shortest* contiguous range ``a..b`` whose
    summed change is at least ``coverage`` (0 < coverage <= 1) of the total; among
    equally short ones the one holding the most change (then the lowest ``a``).
    Such a range never begins or ends on a layer without effect. A direction that
    does not change the image at all, and a generator with a single layer, get
    every layer. Returns ``range(a, b + 1)``. Raises ``ValueError`` for a negative,
    non-finite or empty profile or a coverage outside (0, 1]."""
    p = torch.as_tensor(profile, dtype=torch.float64).reshape(-1)
    if p.numel() == 0 or not torch.isfinite(p).all() or (p < 0).any():
        raise ValueError(f"suggest_layers: profile must be a non-empty vector of finite values >= 0, got {p.tolist()}")
    if not 0 < coverage <= 1:
        raise ValueError(f"suggest_layers: coverage must be in (0, 1], got {coverage}")
    L, total = p.numel(), p.sum().item()
    if L == 1 or total <= 0:
        return range(L)
    cumsum = torch.cat([p.new_zeros(1), p.cumsum(0)])
    need = coverage * total * (1 - 1e-12)  # the full range always qualifies, rounding aside
    for length in range(1, L + 1):
        mass = cumsum[length:] - cumsum[:-length]  # mass of a..a+length-1 for every a
        if mass.max().item() >= need:
            a = int(mass.argmax())  # argmax: the first of the largest
            return range(a, a + length)
    return range(L)


@dataclass
class LayerProfile:
    """How one direction acts through the layers.

    ``change``: float64 ``(L,)``, mean image change (:func:`image_change`, or the
    probe's) over the latents when only layer l is edited; ``layers``: the
    suggested range (:func:`suggest_layers`); ``share``: fraction of the profile's
    total inside it; ``concentration``: ``1 - H(p) / ln L`` of the normalised
    profile p (1 = one layer, 0 = spread evenly; 1 for a single-layer generator,
    0 for a direction that changes nothing)."""

    change: Tensor
    layers: range
    share: float
    concentration: float

    @property
    def label(self) -> str:
        """'W3-W7' (or 'W4' for one layer)."""
        a, b = self.layers.start, self.layers.stop - 1
        return f"W{a}" if a == b else f"W{a}-W{b}"

    @classmethod
    def from_change(cls, change: Tensor, coverage: float = DEFAULT_COVERAGE) -> "LayerProfile":
        change = torch.as_tensor(change, dtype=torch.float64).reshape(-1)
        layers = suggest_layers(change, coverage)
        total = change.sum().item()
        L = change.numel()
        if L == 1:
            return cls(change, layers, 1.0, 1.0)
        if total <= 0:
            return cls(change, layers, 1.0, 0.0)
        p = change / total
        entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
        return cls(change, layers, change[layers.start : layers.stop].sum().item() / total,
                   max(0.0, 1 - entropy / math.log(L)))


@torch.no_grad()
def layer_profiles(adapter, latents: Tensor, directions: Tensor, strength: float, *, probe=None,
                   coverage: float = DEFAULT_COVERAGE, batch_size: int = 16, progress: bool = True) -> list[LayerProfile]:
    """The layer profile and suggested range of each direction.

    ``adapter``: any :class:`~sfvq_ext.adapters.GeneratorAdapter`; ``latents``:
    ``(n, latent_dim)`` (or per layer); ``directions``: ``(M, latent_dim)`` or one
    ``(latent_dim,)``; ``strength``: the edit's step in latent units (directions
    are used as given, e.g. unit vectors from :func:`~sfvq_ext.directions`).
    For every direction and layer l, the latents move by ``strength`` along the
    direction in layer l only (``adapter.apply_direction(..., layers=[l])``), are
    rendered in batches of ``batch_size`` and compared with the unedited renders:
    by :func:`image_change` (multi-scale pixels), or, with ``probe`` (a callable
    ``images -> (n, F)`` scores), by :func:`probe_change`. ``n * M * L + n``
    renders in all, one progress bar. Single-layer edits do not add up exactly to
    the all-layer edit (the generator is not linear); the profile says where a
    direction acts, not a decomposition of it.

    A generator with ``num_layers == 1`` (e.g. BigGAN's z) has nothing to choose:
    each profile is the whole edit's change and the range is that one layer.
    Returns one :class:`LayerProfile` per direction. Raises ``ValueError`` for bad
    directions, strength or coverage."""
    directions = check_directions(directions, adapter.latent_dim, "layer_profiles")
    if not isinstance(strength, (int, float)) or not math.isfinite(strength):
        raise ValueError(f"layer_profiles: strength must be a finite number, got {strength!r}")
    if not 0 < coverage <= 1:
        raise ValueError(f"layer_profiles: coverage must be in (0, 1], got {coverage}")
    L = adapter.num_layers
    selections = [None] if L == 1 else [[l] for l in range(L)]
    base = adapter.render(latents, batch_size=batch_size, progress=False)

    def measure(images: Tensor) -> Tensor:
        if probe is None:
            return image_change(base, images)
        return probe_change(probe, base, images)

    profiles = []
    bar = tqdm(total=len(directions) * len(selections), desc="layer profiles", unit="edit", disable=not progress)
    for d in directions:
        change = torch.zeros(len(selections), dtype=torch.float64)
        for k, layers in enumerate(selections):
            edited = adapter.apply_direction(latents, d, strength, layers=layers)
            change[k] = measure(adapter.render(edited, batch_size=batch_size, progress=False)).mean()
            bar.update()
        profiles.append(LayerProfile.from_change(change, coverage))
    bar.close()
    return profiles


def layer_profile(adapter, latents: Tensor, direction: Tensor, strength: float, **kwargs) -> LayerProfile:
    """:func:`layer_profiles` for one direction ``(latent_dim,)``."""
    if not isinstance(direction, Tensor) or direction.dim() != 1:
        raise ValueError(f"layer_profile: direction must be a (latent_dim,) tensor, got "
                         f"{tuple(direction.shape) if isinstance(direction, Tensor) else type(direction).__name__}")
    return layer_profiles(adapter, latents, direction, strength, **kwargs)[0]


def layer_groups(num_layers: int) -> dict[str, range]:
    """Coarse / middle / fine thirds of the W+ layers (as in StyleGAN's style
    mixing), plus all: ``{"all": range(L), "coarse": ..., "middle": ..., "fine": ...}``;
    just ``{"all": range(1)}`` for a single-layer generator, and fewer groups when
    there are fewer than 3 layers."""
    if num_layers < 1:
        raise ValueError(f"layer_groups: num_layers must be positive, got {num_layers}")
    groups = {"all": range(num_layers)}
    if num_layers == 1:
        return groups
    cuts = [round(num_layers * k / 3) for k in range(4)]
    for name, a, b in zip(("coarse", "middle", "fine"), cuts, cuts[1:]):
        if b > a:
            groups[name] = range(a, b)
    return groups
