"""The bottom of the interpretation layer: pictures. Image grids saved as PNG, the
codebook rendered in curve order, edit grids along a direction, and controlled
augmentation sets along a segment."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import Tensor


# ---------------------------------------------------------------------------
# Pictures: grids of rendered images, saved as PNG.


def to_uint8(images: Tensor) -> Tensor:
    """(n, 3, H, W) in [-1, 1] -> (n, H, W, 3) uint8."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()


def image_grid(images: Tensor, columns: int, pad: int = 2, background: int = 255, scale: int = 1) -> Tensor:
    """Tile images (n, 3, H, W) in [-1, 1] row by row into one (rows*(H+pad)+pad, ...) uint8 HWC image;
    ``scale`` enlarges each image by pixel repetition (small renders stay readable)."""
    tiles = to_uint8(images)
    if scale > 1:
        tiles = tiles.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    n, h, w, _ = tiles.shape
    rows = -(-n // columns)
    grid = torch.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), background, dtype=torch.uint8)
    for i in range(n):
        r, c = divmod(i, columns)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = tiles[i]
    return grid


def save_png(image: Tensor, path) -> Path:
    """Write an HWC uint8 image as PNG, atomically."""
    from PIL import Image

    from ..checkpoint import atomic_write_bytes

    buffer = io.BytesIO()
    Image.fromarray(image.numpy()).save(buffer, format="PNG")
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def render_codebook(adapter, codebook: Tensor, path=None, *, columns: int = 16, batch_size: int = 16,
                    progress: bool = True, scale: int = 1) -> Tensor:
    """The "panoptic" view: every codebook vector rendered, in curve order, row by
    row (``columns`` per row). One look shows which region of the curve holds which
    factor. Returns the images (K, 3, H, W); writes the grid to ``path`` if given."""
    images = adapter.render(codebook.detach(), batch_size=batch_size, progress=progress)
    if path is not None:
        save_png(image_grid(images, min(columns, len(images)), scale=scale), path)
    return images


def edit_grid(adapter, latents: Tensor, direction: Tensor, strengths, path=None, *, layers=None,
              batch_size: int = 16, progress: bool = True, scale: int = 1) -> Tensor:
    """Edits along ``direction``: rows are ``latents``, columns are ``strengths``
    (strength 0 is the latent itself); ``layers`` restricts the edit to those W+
    layers. Returns the images (rows * columns, 3, H, W); writes the grid to ``path``."""
    strengths = [float(s) for s in strengths]
    if not strengths:
        raise ValueError("edit_grid: strengths must hold at least one value")
    n = len(latents)
    repeated = latents.repeat_interleave(len(strengths), dim=0)
    per_row = torch.tensor(strengths, dtype=torch.promote_types(latents.dtype, torch.float32)).repeat(n)
    edited = adapter.apply_direction(repeated, direction, per_row, layers=layers)
    images = adapter.render(edited, batch_size=batch_size, progress=progress)
    if path is not None:
        save_png(image_grid(images, len(strengths), scale=scale), path)
    return images


def augment_segment(adapter, codebook: Tensor, segment: int, n: int, out_dir, *, batch_size: int = 16,
                    progress: bool = True, scale: int = 1) -> dict:
    """A controlled augmentation set: ``n`` latents evenly spaced along curve segment
    ``segment`` (ends included), rendered. Writes ``out_dir/frame_000.png`` ...,
    ``latents.npy`` (n, D) in the codebook's dtype promoted to at least float32,
    and ``sheet.png`` (all frames in a row); returns what it wrote and the float64
    position of each frame along the segment (``t``, so frame j sits at curve
    coordinate ``segment + t[j]``)."""
    import numpy as np

    from ..checkpoint import atomic_write_bytes

    latents = adapter.segment_points(codebook.detach(), segment, n)
    images = adapter.render(latents, batch_size=batch_size, progress=progress)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = [save_png(to_uint8(images[i : i + 1])[0], out_dir / f"frame_{i:03d}.png") for i in range(n)]
    buffer = io.BytesIO()
    np.save(buffer, latents.cpu().numpy())
    atomic_write_bytes(out_dir / "latents.npy", buffer.getvalue())
    sheet = save_png(image_grid(images, n, scale=scale), out_dir / "sheet.png")
    t = torch.linspace(0, 1, n, dtype=torch.float64).tolist()
    return {"frames": [str(f) for f in frames], "latents": str(out_dir / "latents.npy"), "sheet": str(sheet), "t": t}
