"""A procedural image world with known generative factors (no download).

Each 32x32 RGB image shows one coloured shape on a grey background, drawn
anti-aliased from eight factors:

=========== ===================================================================
shape       0 ellipse, 1 square, 2 triangle (categorical)
hue         colour of the shape, in [0, 0.75] of the colour wheel (no wrap-around)
size        radius, as a fraction of half the image width, in [0.45, 0.8]
x, y        centre, in [-0.35, 0.35] of half the image width
rotation    in [-1, 1] quarter turns of the shape's symmetry period (unambiguous)
background  grey level of the background, in [0.1, 0.9]
stripes     contrast of fine horizontal stripes across the shape (a 4-pixel
            period), in [0, 1]: 0 a plain shape, 1 dark stripes at 60% depth
=========== ===================================================================

The stripes are the world's fine-scale factor: a texture at the finest resolution
that nothing else in the image shows, as colour schemes and micro-structure are for
the fine W+ layers of a StyleGAN2 (coarse layers hold pose and shape, the middle
ones features).

The same seed gives the same factors and images on every machine.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

RESOLUTION = 32
SHAPES = ("ellipse", "square", "triangle")
CONTINUOUS = ("hue", "size", "x", "y", "rotation", "background", "stripes")
FACTORS = ("shape",) + CONTINUOUS
RANGES = {"hue": (0.0, 0.75), "size": (0.45, 0.8), "x": (-0.35, 0.35), "y": (-0.35, 0.35),
          "rotation": (-1.0, 1.0), "background": (0.1, 0.9), "stripes": (0.0, 1.0)}
STRIPE_PERIOD = 4  # pixels
STRIPE_DEPTH = 0.6  # the shape's colour darkened by up to this share along a stripe
# symmetry period of each shape, in radians (a rotation by it changes nothing)
PERIOD = torch.tensor([math.pi, math.pi / 2, 2 * math.pi / 3])


def sample_factors(n: int, seed: int = 0) -> dict[str, Tensor]:
    """``n`` factor settings drawn uniformly (shape uniform over the three)."""
    g = torch.Generator().manual_seed(seed)
    factors = {"shape": torch.randint(0, len(SHAPES), (n,), generator=g)}
    for name in CONTINUOUS:
        low, high = RANGES[name]
        factors[name] = low + (high - low) * torch.rand(n, generator=g)
    return factors


def hsv_to_rgb(hue: Tensor) -> Tensor:
    """Fully saturated, full-value colours for hues in [0, 1): (n, 3) in [0, 1]."""
    k = (hue[:, None] * 6 + torch.tensor([5.0, 3.0, 1.0])) % 6
    return 1 - torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def render(factors: dict[str, Tensor], resolution: int = RESOLUTION) -> Tensor:
    """Images (n, 3, resolution, resolution) in [-1, 1] for the given factors."""
    shape = factors["shape"].long()
    n = len(shape)
    pixel = 2.0 / resolution
    coords = (torch.arange(resolution, dtype=torch.float32) + 0.5) * pixel - 1  # pixel centres in [-1, 1]
    v, u = torch.meshgrid(coords, coords, indexing="ij")
    size = factors["size"].float()[:, None, None]
    px = u[None] - factors["x"].float()[:, None, None]
    py = v[None] - factors["y"].float()[:, None, None]
    angle = (factors["rotation"].float() * PERIOD[shape] / 4)[:, None, None]
    # shape-local coordinates: undo the rotation, then the size
    qx = (torch.cos(angle) * px + torch.sin(angle) * py) / size
    qy = (-torch.sin(angle) * px + torch.cos(angle) * py) / size
    # signed distances in shape units (negative inside); approximate but smooth enough for anti-aliasing
    ellipse = (torch.sqrt((qx / 1.0) ** 2 + (qy / 0.55) ** 2) - 1) * 0.55
    square = torch.maximum(qx.abs(), qy.abs()) - 0.75
    normals = [(math.cos(a), math.sin(a)) for a in (math.pi / 2, math.pi / 2 + 2 * math.pi / 3, math.pi / 2 + 4 * math.pi / 3)]
    triangle = torch.stack([-(nx * qx + ny * qy) for nx, ny in normals]).amax(dim=0) - 0.5
    distance = torch.stack([ellipse, square, triangle], dim=1)[torch.arange(n), shape]
    coverage = torch.clamp(0.5 - distance * size / pixel, 0, 1)[:, None]  # distance in pixels
    colour = hsv_to_rgb(factors["hue"].float())[:, :, None, None]
    row = torch.arange(resolution, dtype=torch.float32)[:, None]  # stripes fixed to the pixel rows
    stripe = 0.5 * (1 + torch.cos(2 * math.pi * row / STRIPE_PERIOD))  # (resolution, 1), 1 on a dark row
    shade = 1 - STRIPE_DEPTH * factors["stripes"].float()[:, None, None, None] * stripe
    background = factors["background"].float()[:, None, None, None]
    image = coverage * colour * shade + (1 - coverage) * background
    return image * 2 - 1


def factor_matrix(factors: dict[str, Tensor]) -> Tensor:
    """The continuous factors as columns (n, 7), scaled to [0, 1] by their ranges."""
    return torch.stack([(factors[k].float() - RANGES[k][0]) / (RANGES[k][1] - RANGES[k][0]) for k in CONTINUOUS], 1)
