"""Interpretation tools on a tiny random StyleGAN2: the codebook picture, edit
grids, augmentation sets, and the GANSpace / SeFa baselines."""

import numpy as np
import pytest
import torch
from PIL import Image

import sfvq_ext
from sfvq_ext.adapters import StyleGAN2Adapter, StyleGAN2Generator
from sfvq_ext.baselines import ganspace_directions, sefa_directions, style_weights
from sfvq_ext.interpret import augment_segment, edit_grid, image_grid, render_codebook, to_uint8


pytestmark = pytest.mark.usefixtures("no_network")


@pytest.fixture(scope="module")
def adapter():
    torch.manual_seed(0)
    g = StyleGAN2Generator(16, style_dim=16, n_mlp=2, channels={4: 8, 8: 8, 16: 8})
    g.set_w_avg()
    return StyleGAN2Adapter(g)


def read_png(path):
    return torch.from_numpy(np.array(Image.open(path).convert("RGB")))


def tile(grid, row, col, h, w, pad=2):
    return grid[pad + row * (h + pad) : pad + row * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w]


def test_codebook_picture_shows_every_vector_in_order(adapter, tmp_path):
    codebook = adapter.sample_latents(10, seed=1)
    images = render_codebook(adapter, codebook, tmp_path / "codebook.png", columns=4, progress=False)
    grid = read_png(tmp_path / "codebook.png")
    assert grid.shape == (2 + 3 * 18, 2 + 4 * 18, 3)  # 3 rows of 4 tiles of 16 px, 2 px gaps
    expected = to_uint8(adapter.render(codebook, progress=False))
    for i in range(10):
        assert torch.equal(tile(grid, i // 4, i % 4, 16, 16), expected[i])
    assert torch.equal(tile(grid, 2, 3, 16, 16), torch.full((16, 16, 3), 255, dtype=torch.uint8))  # empty slot


def test_edit_grid_rows_are_latents_columns_are_strengths(adapter, tmp_path):
    w = adapter.sample_latents(2, seed=2)
    d = sfvq_ext.directions(adapter.sample_latents(5, seed=3))[0]
    images = edit_grid(adapter, w, d, [-3, 0, 3], tmp_path / "edit.png", layers=range(2, 5), progress=False)
    assert images.shape == (6, 3, 16, 16)
    torch.testing.assert_close(images[1], adapter.render(w[:1], progress=False)[0])  # strength 0 = the latent
    torch.testing.assert_close(images[4], adapter.render(w[1:], progress=False)[0])
    want = adapter.render(adapter.apply_direction(w[1:], d, 3.0, layers=range(2, 5)), progress=False)[0]
    torch.testing.assert_close(images[5], want)
    assert read_png(tmp_path / "edit.png").shape == (2 + 2 * 18, 2 + 3 * 18, 3)


def test_augmentation_set_along_a_segment(adapter, tmp_path):
    codebook = adapter.sample_latents(6, seed=4)
    out = augment_segment(adapter, codebook, 2, 5, tmp_path / "aug", progress=False)
    latents = torch.from_numpy(np.load(out["latents"]))
    torch.testing.assert_close(latents, StyleGAN2Adapter.segment_points(codebook, 2, 5))
    torch.testing.assert_close(latents[0], codebook[2])
    torch.testing.assert_close(latents[-1], codebook[3])
    assert len(out["frames"]) == 5
    expected = to_uint8(adapter.render(latents, progress=False))
    for i, frame in enumerate(out["frames"]):
        assert torch.equal(read_png(frame), expected[i])


def test_ganspace_recovers_known_axes():
    g = torch.Generator().manual_seed(0)
    axes = torch.linalg.qr(torch.randn(12, 12, generator=g))[0].T  # orthonormal rows
    scales = torch.tensor([5.0, 3.0, 2.0] + [0.1] * 9)
    x = (torch.randn(20000, 12, generator=g) * scales) @ axes + 7.0
    dirs, var = ganspace_directions(x, k=3)
    cos = (dirs.double() @ axes[:3].double().T).abs().diagonal()
    assert torch.all(cos > 0.999), cos
    torch.testing.assert_close(var, scales[:3] ** 2, rtol=0.05, atol=0)


def test_sefa_is_the_top_eigenvectors_of_the_style_weights(adapter):
    G = adapter.G
    dirs, eig = sefa_directions(G, k=4)
    a = torch.cat([p for n, p in G.named_parameters() if n.endswith("modulation.weight") and "to_rgb" not in n]).double()
    assert style_weights(G).shape == a.shape == (5 * 8, 16)  # conv1 and 4 convs, 8 input channels each; no ToRGB
    values, vectors = torch.linalg.eigh(a.T @ a)
    top = vectors[:, -4:].flip(1).T
    assert torch.all((dirs.double() * top).sum(1).abs() > 0.9999)
    torch.testing.assert_close(eig.double(), values[-4:].flip(0), rtol=1e-5, atol=0)
    with pytest.raises(ValueError, match="no style-modulation weights"):
        sefa_directions(torch.nn.Linear(3, 3))


def test_image_grid_layout():
    images = torch.stack([torch.full((3, 2, 2), v) for v in (-1.0, 0.0, 1.0)])
    grid = image_grid(images, columns=2, pad=1)
    assert grid.shape == (1 + 2 * 3, 1 + 2 * 3, 3)
    assert grid[1, 1].tolist() == [0, 0, 0] and grid[1, 4].tolist() == [128, 128, 128] and grid[4, 1].tolist() == [255] * 3


def test_augmentation_set_of_a_bfloat16_curve_keeps_its_positions(adapter, tmp_path):
    """Segment 300 of a 512-vector bfloat16 curve: 5 distinct latents (a bfloat16
    coordinate would put all of them on c_300), written at least in float32."""
    codebook = (adapter.sample_latents(512, seed=5) + 0.01 * torch.arange(512.0)[:, None]).bfloat16()
    out = augment_segment(adapter, codebook, 300, 5, tmp_path / "aug", progress=False)
    latents = torch.from_numpy(np.load(out["latents"]))
    assert latents.dtype == torch.float32 and len({tuple(row) for row in latents.tolist()}) == 5
    assert out["t"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    ends = codebook[300:302].double()
    for row, t in zip(latents, out["t"]):
        torch.testing.assert_close(row.double(), (1 - t) * ends[0] + t * ends[1], rtol=1e-6, atol=1e-7)
