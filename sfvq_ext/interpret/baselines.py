"""Editing directions from other methods, for comparison on the same latents."""

from __future__ import annotations

import torch
from torch import Tensor


def ganspace_directions(latents: Tensor, k: int = 10) -> tuple[Tensor, Tensor]:
    """GANSpace (Härkönen et al., 2020): the top-``k`` principal axes of sampled
    latents (e.g. StyleGAN W), as unit rows ``(k, D)`` with the variance along each."""
    if latents.dim() != 2 or len(latents) < 2:
        raise ValueError(f"ganspace_directions: latents must be (n, D) with n >= 2, got {tuple(latents.shape)}")
    x = latents.double()
    x = x - x.mean(dim=0)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    k = min(k, vh.shape[0])
    return vh[:k].float(), (s[:k] ** 2 / (len(x) - 1)).float()


def style_weights(G: torch.nn.Module) -> Tensor:
    """The style-modulation (affine) weights of every synthesis layer except ToRGB,
    stacked: ``(sum of channels, w_dim)``. Names: ``*.modulation.weight`` (this
    package's and rosinality's generators) or ``*.affine.weight`` (NVlabs)."""
    parts = [p.detach() for name, p in G.named_parameters()
             if (name.endswith("modulation.weight") or name.endswith("affine.weight"))
             and "rgb" not in name.lower()]
    if not parts:
        raise ValueError(f"style_weights: {type(G).__name__} has no style-modulation weights "
                         "(parameters named *.modulation.weight or *.affine.weight)")
    return torch.cat(parts, dim=0)


def sefa_directions(G: torch.nn.Module, k: int = 10) -> tuple[Tensor, Tensor]:
    """SeFa (Shen & Zhou, 2021), closed form: the directions the style layers
    respond to most, the top-``k`` eigenvectors of ``AᵀA`` for the stacked
    modulation weights ``A``; unit rows ``(k, w_dim)`` and their eigenvalues."""
    a = style_weights(G).double()
    _, s, vh = torch.linalg.svd(a, full_matrices=False)
    k = min(k, vh.shape[0])
    return vh[:k].float(), (s[:k] ** 2).float()
