"""The one interface every generator adapter offers to the interpretation tools."""

from __future__ import annotations

import abc
import operator
from collections.abc import Iterable

import torch
from torch import Tensor
from tqdm.auto import tqdm


def _as_int(value):
    """``value`` as an int if it is an integer (int, numpy or 0-d tensor integer; not bool), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


class GeneratorAdapter(abc.ABC):
    """A generator seen through its latent space.

    * ``latent_dim``: width of the latents SFVQ is fitted on (StyleGAN2: W; BigGAN: z);
    * ``num_layers``: W+ layers a latent can be given per layer (1 where there are none);
    * :meth:`sample_latents`, :meth:`render`, :meth:`apply_direction`, :meth:`segment_points`.

    Latents are ``(n, latent_dim)``, or per layer ``(n, num_layers, latent_dim)``.
    Images are float32 ``(n, 3, H, W)`` in ``[-1, 1]`` on the CPU.
    """

    latent_dim: int
    num_layers: int = 1
    device: torch.device = torch.device("cpu")

    @abc.abstractmethod
    def sample_latents(self, n: int, *, seed: int = 0, truncation: float = 1.0, class_idx: int | None = None) -> Tensor:
        """``n`` latents drawn from the generator's prior; the same seed gives the same latents.

        ``truncation``: StyleGAN's psi towards ``w_avg``; a BigGAN adapter's truncation is
        fixed at construction (it also selects the statistics rendering uses), so there it
        may only repeat that value. ``class_idx``: the class of a class-conditional model."""

    @abc.abstractmethod
    def _render_batch(self, latents: Tensor) -> Tensor:
        """Images for one batch of latents (on ``self.device``)."""

    # -- shared behaviour --------------------------------------------------

    def check_latents(self, latents: Tensor, where: str) -> Tensor:
        if not isinstance(latents, Tensor) or not latents.is_floating_point():
            raise TypeError(f"{where}: latents must be a floating-point tensor")
        ok = (latents.dim() == 2 and latents.shape[1] == self.latent_dim) or (
            latents.dim() == 3 and latents.shape[1:] == (self.num_layers, self.latent_dim) and self.num_layers > 1)
        if not ok:
            per_layer = f" or (n, {self.num_layers}, {self.latent_dim})" if self.num_layers > 1 else ""
            raise ValueError(f"{where}: latents must have shape (n, {self.latent_dim}){per_layer}, "
                             f"got {tuple(latents.shape)}")
        if not torch.isfinite(latents).all():
            raise ValueError(f"{where}: latents contain NaN or Inf")
        return latents

    @torch.no_grad()
    def render(self, latents: Tensor, *, batch_size: int = 16, progress: bool = True) -> Tensor:
        """Images for ``latents``, rendered in batches (deterministic: constant noise)."""
        latents = self.check_latents(latents, "render")
        if batch_size < 1:
            raise ValueError(f"render: batch_size must be positive, got {batch_size}")
        images = []
        for start in tqdm(range(0, len(latents), batch_size), desc="render", unit="batch",
                          disable=not progress or len(latents) <= batch_size):
            batch = latents[start : start + batch_size].to(self.device, torch.float32)
            images.append(self._render_batch(batch).float().clamp(-1, 1).cpu())
        if not images:
            raise ValueError("render: no latents given")
        return torch.cat(images)

    def layer_indices(self, layers, where: str) -> list[int]:
        """Check a layer selection (``range``, iterable of ints, or ``(first, last)`` inclusive)."""
        if isinstance(layers, tuple) and len(layers) == 2 and all(isinstance(v, int) for v in layers):
            layers = range(layers[0], layers[1] + 1)
        indices = sorted(set(int(i) for i in layers)) if isinstance(layers, Iterable) else None
        if not indices:
            raise ValueError(f"{where}: layers must name at least one layer, got {layers!r}")
        bad = [i for i in indices if not 0 <= i < self.num_layers]
        if bad:
            raise ValueError(f"{where}: layers {bad} are outside the generator's {self.num_layers} layers "
                             f"(valid: 0..{self.num_layers - 1})")
        return indices

    def apply_direction(self, latents: Tensor, direction: Tensor, strength, layers=None) -> Tensor:
        """``latents + strength * direction``; with ``layers`` only those W+ layers move
        (the result is then per layer, ``(n, num_layers, latent_dim)``).
        ``strength`` is a number or one value per latent. The result is in the
        latents' dtype promoted to at least float32 (a bfloat16 latent moved by a
        small strength would not move at all)."""
        latents = self.check_latents(latents, "apply_direction")
        latents = latents.to(torch.promote_types(latents.dtype, torch.float32))
        direction = torch.as_tensor(direction, dtype=latents.dtype, device=latents.device)
        if direction.shape != (self.latent_dim,):
            raise ValueError(f"apply_direction: direction must have shape ({self.latent_dim},), got {tuple(direction.shape)}")
        strength = torch.as_tensor(strength, dtype=latents.dtype, device=latents.device).reshape(-1)
        if strength.numel() not in (1, len(latents)):
            raise ValueError(f"apply_direction: strength must be a number or one per latent ({len(latents)}), "
                             f"got {strength.numel()} values")
        step = strength[:, None] * direction  # (1 or n, latent_dim)
        if layers is None:
            return latents + (step[:, None] if latents.dim() == 3 else step)
        if self.num_layers == 1:
            raise ValueError("apply_direction: this generator has no W+ layers; leave layers=None")
        chosen = self.layer_indices(layers, "apply_direction")
        per_layer = latents if latents.dim() == 3 else latents[:, None].expand(-1, self.num_layers, -1)
        mask = torch.zeros(self.num_layers, 1, dtype=latents.dtype, device=latents.device)
        mask[chosen] = 1
        return per_layer + mask * step[:, None]

    @staticmethod
    def segment_points(codebook: Tensor, segment: int, n: int) -> Tensor:
        """``n`` evenly spaced points along curve segment ``segment`` (both ends
        included): a controlled augmentation set between ``c_i`` and ``c_{i+1}``.

        ``codebook``: (K, D) floating-point, any device. Returns (n, D) on its device,
        in its dtype promoted to at least float32: point j is
        ``(1 - t_j) c_i + t_j c_{i+1}`` with ``t_j = j / (n - 1)``, computed in float64
        from the vertices as stored. (The curve coordinate ``i + t_j`` is never cast to
        the codebook's dtype: in bfloat16, 300 and 300.25 are the same number.)
        Raises ``TypeError`` / ``ValueError`` for a bad codebook, segment or n."""
        if not isinstance(codebook, Tensor) or not codebook.is_floating_point() or codebook.dim() != 2:
            got = f"{codebook.dtype} tensor of shape {tuple(codebook.shape)}" if isinstance(codebook, Tensor) \
                else type(codebook).__name__
            raise TypeError(f"segment_points: codebook must be a floating-point (K, D) tensor, got {got}")
        K = codebook.shape[0]
        i, count = _as_int(segment), _as_int(n)
        if i is None or not 0 <= i <= K - 2:
            raise ValueError(f"segment_points: segment must be an int in [0, {K - 2}], got {segment!r}")
        if count is None or count < 1:
            raise ValueError(f"segment_points: n must be a positive int, got {n!r}")
        segment, n = i, count
        ends = codebook[segment : segment + 2].detach().double()
        t = torch.linspace(0, 1, n, dtype=torch.float64, device=codebook.device)[:, None]
        points = (1 - t) * ends[0] + t * ends[1]
        return points.to(torch.promote_types(codebook.dtype, torch.float32))
