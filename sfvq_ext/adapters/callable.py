"""Bring your own generator: an adapter from two callables."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .base import GeneratorAdapter


class CallableAdapter(GeneratorAdapter):
    """``sample(n, generator) -> (n, latent_dim)`` draws latents (from the CPU
    ``torch.Generator`` it is given, so seeds reproduce); ``render(latents) ->
    images (n, 3, H, W)`` in [-1, 1]. With ``num_layers > 1`` render also receives
    per-layer latents ``(n, num_layers, latent_dim)``."""

    def __init__(self, sample: Callable[[int, torch.Generator], Tensor], render: Callable[[Tensor], Tensor],
                 latent_dim: int, num_layers: int = 1, device=None):
        if not callable(sample) or not callable(render):
            raise TypeError("CallableAdapter: sample and render must be callables")
        if latent_dim < 1 or num_layers < 1:
            raise ValueError(f"CallableAdapter: latent_dim and num_layers must be positive, got {latent_dim}, {num_layers}")
        self._sample, self._render = sample, render
        self.latent_dim, self.num_layers = latent_dim, num_layers
        self.device = torch.device(device or "cpu")

    def sample_latents(self, n: int, *, seed: int = 0, truncation: float = 1.0, class_idx: int | None = None) -> Tensor:
        if truncation != 1.0 or class_idx is not None:
            raise ValueError("CallableAdapter.sample_latents: truncation and class_idx belong in your sample callable")
        return self.check_latents(self._sample(n, torch.Generator().manual_seed(seed)), "sample").float().cpu()

    def latent_sampler(self, **_):
        return self._sample

    def _render_batch(self, latents: Tensor) -> Tensor:
        images = self._render(latents)
        if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[:2] != (len(latents), 3):
            got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"CallableAdapter: render must return images (n, 3, H, W), got {got}")
        return images
