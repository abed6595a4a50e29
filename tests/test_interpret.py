"""Interpretation tools on a tiny random StyleGAN2: the codebook picture, edit
grids, augmentation sets, and the GANSpace / SeFa baselines."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

import sfvq_ext
from sfvq_ext.adapters import StyleGAN2Adapter, StyleGAN2Generator
from sfvq_ext.interpret import ganspace_directions, sefa_directions, style_weights
from sfvq_ext.interpret import augment_segment, edit_grid, image_grid, render_codebook, to_uint8


pytestmark = pytest.mark.usefixtures("no_network")


@pytest.fixture(scope="module")
def adapter(tiny_stylegan2):
    return tiny_stylegan2


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


# ---------------------------------------------------------------------------
# Layer profiles and suggested layer ranges (issue 16)

from sfvq_ext.adapters import CallableAdapter  # noqa: E402
from sfvq_ext.interpret import (LayerProfile, image_change, layer_groups, layer_profile,  # noqa: E402
                                layer_profiles, suggest_layers)


def style_readers(g):
    """W+ layer index -> the modulated convolutions that read it, from the synthesis
    loop of our StyleGAN2 (conv1: 0; to_rgb1: 1; block j: convs 2j+1, 2j+2, to_rgb 2j+3)."""
    readers = {0: [g.conv1.conv], 1: [g.to_rgb1.conv]}
    for j, rgb in enumerate(g.to_rgbs):
        readers.setdefault(2 * j + 1, []).append(g.convs[2 * j].conv)
        readers.setdefault(2 * j + 2, []).append(g.convs[2 * j + 1].conv)
        readers.setdefault(2 * j + 3, []).append(rgb.conv)
    return readers


def planted_generator(size, layers, seed=0):
    """A tiny random StyleGAN2 and a unit direction d that only the style inputs of
    ``layers`` respond to: every other layer's modulation weights get d projected out
    (W <- W - (W d) d^T), so moving that layer's w along d leaves its styles unchanged."""
    torch.manual_seed(seed)
    g = StyleGAN2Generator(size, style_dim=16, n_mlp=2, channels={r: 8 for r in (4, 8, 16, 32) if r <= size})
    g.set_w_avg()
    d = torch.nn.functional.normalize(torch.randn(16, generator=torch.Generator().manual_seed(seed + 1)), dim=0)
    readers = style_readers(g)
    assert sorted(readers) == list(range(g.num_ws))
    with torch.no_grad():
        for layer, modules in readers.items():
            if layer not in layers:
                for m in modules:
                    m.modulation.weight -= (m.modulation.weight @ d)[:, None] * d[None]
    return StyleGAN2Adapter(g), d


@pytest.mark.parametrize("size, planted", [(16, {2, 3}), (32, {0}), (32, {2, 3, 4}), (32, {5, 6, 7}),
                                           (32, {1, 2, 3, 4, 5})])
def test_suggested_range_of_a_planted_direction_is_its_layers(size, planted):
    adapter, d = planted_generator(size, planted)
    w = adapter.sample_latents(6, seed=3)
    profile = layer_profile(adapter, w, d, 3.0, coverage=0.9, progress=False)
    assert profile.layers == range(min(planted), max(planted) + 1)
    # the default (half the change) picks where it acts most: inside the planted layers
    assert set(suggest_layers(profile.change)) <= planted
    off = [l for l in range(adapter.num_layers) if l not in planted]
    assert profile.change[off].max() < 1e-4 * profile.change.max()  # float rounding only
    assert profile.change[sorted(planted)].min() > 0.05  # every planted layer visibly moves the image
    assert profile.share == pytest.approx(1.0, abs=1e-4)
    # the profile is the mean image change of single-layer edits (the definition, checked for one layer)
    l = min(planted)
    want = image_change(adapter.render(w, progress=False),
                        adapter.render(adapter.apply_direction(w, d, 3.0, layers=[l]), progress=False)).mean()
    assert profile.change[l].item() == pytest.approx(want.item(), rel=1e-9)


def test_suggest_layers_rule():
    assert suggest_layers([0, 1.0, 0, 0]) == range(1, 2)
    assert suggest_layers([0.05, 0.5, 0.4, 0.05], coverage=0.9) == range(1, 3)  # 0.9 of the total in two layers
    assert suggest_layers([0.05, 0.5, 0.4, 0.05]) == range(1, 2)  # the default: half of it, in one layer
    # a spread profile with a bump (every layer moves some): half sits in the bump, 90% spans nearly all
    spread = [0.30, 0.33, 0.11, 0.04, 0.06, 0.04, 0.08, 0.02]
    assert suggest_layers(spread) == range(0, 2) and suggest_layers(spread, coverage=0.9) == range(0, 7)
    assert suggest_layers([0.05, 0.5, 0.4, 0.05], coverage=0.95) == range(0, 3)  # 0.95: three (first one wins the tie)
    assert suggest_layers([0.04, 0.5, 0.4, 0.06], coverage=0.95) == range(1, 4)  # the larger of two equal-length ranges
    assert suggest_layers([1.0, 0, 0, 1.0], coverage=0.9) == range(0, 4)  # contiguous: the gap is included
    assert suggest_layers([1.0, 0, 0, 1.0]) == range(0, 1)  # half: either end; the first wins the tie
    assert suggest_layers([0.0, 0.0, 0.0]) == range(3)  # nothing changes: every layer
    assert suggest_layers([2.5]) == range(1)
    assert suggest_layers([1.0] * 6, coverage=1.0) == range(6)
    for bad in ([], [1.0, -0.1], [float("nan"), 1.0]):
        with pytest.raises(ValueError, match="profile"):
            suggest_layers(bad)
    with pytest.raises(ValueError, match="coverage"):
        suggest_layers([1.0, 2.0], coverage=0)


def test_layer_profile_summary_numbers():
    p = LayerProfile.from_change(torch.tensor([0.0, 3.0, 1.0, 0.0]), coverage=0.9)
    assert p.layers == range(1, 3) and p.label == "W1-W2" and p.share == pytest.approx(1.0)
    half = LayerProfile.from_change(torch.tensor([0.0, 3.0, 1.0, 0.0]))  # the default: half of the change
    assert half.layers == range(1, 2) and half.label == "W1" and half.share == pytest.approx(0.75)
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert p.concentration == pytest.approx(1 - entropy / math.log(4))
    assert LayerProfile.from_change(torch.ones(5)).concentration == pytest.approx(0.0, abs=1e-12)
    assert LayerProfile.from_change(torch.tensor([0.0, 2.0])).label == "W1"


def test_image_change_is_multiscale_rms():
    a = torch.zeros(2, 3, 32, 32)
    b = a.clone()
    b[0] += 0.5  # a uniform shift: RMS 0.5 at every level
    b[1, :, :16, :] = 1.0  # the top half white: RMS sqrt(1/2) at every level (the halves pool apart)
    torch.testing.assert_close(image_change(a, b), torch.tensor([0.5, 0.5**0.5], dtype=torch.float64))
    c = a.clone()
    c[0, 0, 0, 0] = 1.0  # one pixel of one channel: level s (side 32 / 2^s, 3 levels: 32, 16, 8) has RMS 4^s / (3 * 32^2)^0.5 / ...
    levels = [(1.0 / 4**s) / (3 * (32 // 2**s) ** 2) ** 0.5 for s in range(3)]
    assert image_change(a, c)[0].item() == pytest.approx(sum(levels) / 3, rel=1e-12)
    assert image_change(a, a).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="differ in shape"):
        image_change(a, a[:1])
    with pytest.raises(ValueError, match="before"):
        image_change(torch.zeros(3, 32, 32), a)


def test_single_layer_generator_gets_its_one_layer():
    weights = torch.randn(4, 3 * 8 * 8, generator=torch.Generator().manual_seed(0))
    adapter = CallableAdapter(lambda n, g: torch.randn(n, 4, generator=g),
                              lambda z: torch.tanh(z @ weights).reshape(-1, 3, 8, 8), latent_dim=4)
    z = adapter.sample_latents(5, seed=1)
    d = torch.tensor([1.0, 0, 0, 0])
    profiles = layer_profiles(adapter, z, torch.stack([d, -d]), 0.5, progress=False)
    assert [p.layers for p in profiles] == [range(1), range(1)]
    want = image_change(adapter.render(z, progress=False), adapter.render(z + 0.5 * d, progress=False)).mean()
    assert profiles[0].change.tolist() == pytest.approx([want.item()], rel=1e-9)
    with pytest.raises(ValueError, match="directions"):
        layer_profiles(adapter, z, torch.zeros(3), 0.5, progress=False)
    with pytest.raises(ValueError, match="strength"):
        layer_profiles(adapter, z, d, float("nan"), progress=False)


def test_layer_groups():
    assert layer_groups(8) == {"all": range(8), "coarse": range(0, 3), "middle": range(3, 5), "fine": range(5, 8)}
    assert layer_groups(18)["middle"] == range(6, 12)
    assert layer_groups(1) == {"all": range(1)}
    assert layer_groups(2) == {"all": range(2), "coarse": range(0, 1), "fine": range(1, 2)}


# ---------------------------------------------------------------------------
# Bring-your-own probe (issue 16, item 2)

from sfvq_ext.interpret import ProbeTable, probe_table  # noqa: E402


class ChannelMeans:
    """A probe anyone could write: the mean of each colour channel, and its brightness."""

    names = ["red", "green", "blue", "brightness"]

    def __call__(self, images):
        means = images.mean(dim=(2, 3))
        return torch.cat([means, means.mean(1, keepdim=True)], dim=1)


def colour_adapter():
    """Latent (r, g, b): a flat image of that colour (tanh), 3 layers; a layer's latent
    sets one 4x4 band of rows, so layers are visible apart."""
    def render(z):
        z = z if z.dim() == 3 else z[:, None].expand(-1, 3, -1)
        bands = torch.tanh(z).permute(0, 2, 1)[..., None]  # (n, 3 colours, 3 layers, 1)
        return bands.repeat_interleave(4, dim=2).expand(-1, -1, -1, 12)
    return CallableAdapter(lambda n, g: 0.1 * torch.randn(n, 3, generator=g), render, latent_dim=3, num_layers=3)


def test_probe_table_reads_which_score_each_direction_moves():
    adapter = colour_adapter()
    z = adapter.sample_latents(5, seed=0)
    dirs = torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [0.6, 0.8, 0]])
    table = probe_table(adapter, ChannelMeans(), z, dirs, 0.5, labels=["r", "b", "rg"], progress=False)
    # oracle: the probe's readings of the renders, by hand
    base = ChannelMeans()(adapter.render(z, progress=False)).double()
    for m, d in enumerate(dirs):
        after = ChannelMeans()(adapter.render(z + 0.5 * d, progress=False)).double()
        torch.testing.assert_close(table.changes[m], (after - base).abs().mean(0))
    assert table.top == ["red", "blue", "green"]
    assert table.changes[0, 1] == 0 and table.changes[0, 2] == 0
    # red alone: red moves by x, brightness by x/3 -> exclusivity 3/4
    assert table.exclusivity[0].item() == pytest.approx(0.75)
    assert table.rows()[1]["label"] == "b" and "| rg | green |" in table.to_markdown()


def test_probe_table_groups_layers_and_bad_probes():
    adapter = colour_adapter()
    z = adapter.sample_latents(4, seed=1)
    d = torch.tensor([[1.0, 0, 0]])
    grouped = probe_table(adapter, ChannelMeans(), z, d, 0.5, groups={"colour": ["red", "green", "blue"]},
                          progress=False)
    plain = probe_table(adapter, ChannelMeans(), z, d, 0.5, progress=False)
    assert grouped.names == ["colour", "brightness"]
    torch.testing.assert_close(grouped.changes[0], torch.stack([plain.changes[0, :3].sum(), plain.changes[0, 3]]))
    # one layer of three: a third of the image moves, so a third of the mean change
    per_layer = probe_table(adapter, ChannelMeans(), z, torch.cat([d, d]), 0.5, layers=[[0], None], progress=False)
    assert per_layer.changes[0, 0].item() == pytest.approx(plain.changes[0, 0].item() / 3, rel=1e-6)
    assert per_layer.changes[1, 0].item() == pytest.approx(plain.changes[0, 0].item(), rel=1e-9)
    with pytest.raises(ValueError, match="probe: must return"):
        probe_table(adapter, lambda images: images.mean(dim=(1, 2, 3)), z, d, 0.5, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        probe_table(adapter, lambda images: images.mean(dim=(2, 3)) / 0, z, d, 0.5, progress=False)
    with pytest.raises(ValueError, match="names"):
        probe_table(adapter, ChannelMeans(), z, d, 0.5, names=["a", "b"], progress=False)
    with pytest.raises(ValueError, match="not one of the scores"):
        probe_table(adapter, ChannelMeans(), z, d, 0.5, groups={"g": ["red", "cyan"]}, progress=False)
    assert probe_table(adapter, lambda im: im.mean(dim=(2, 3)), z, d, 0.5, progress=False).names == \
        ["score 0", "score 1", "score 2"]


# ---------------------------------------------------------------------------
# Segment ranking (issue 16, item 3)

from sfvq_ext.interpret import jump_segments, rank_segments  # noqa: E402


def banded_adapter():
    """3 W+ layers, latents of width 3; band l of the 12x12 image (rows 4l..4l+3) is the
    grey level tanh(w_l[l]): layer l acts only through its own coordinate l."""
    def render(w):
        w = w if w.dim() == 3 else w[:, None].expand(-1, 3, -1)
        grey = torch.tanh(torch.diagonal(w, dim1=1, dim2=2))  # (n, 3): layer l's coordinate l
        return grey[:, None, :, None].repeat_interleave(4, dim=2).expand(-1, 3, -1, 12)
    return CallableAdapter(lambda n, g: 0.1 * torch.randn(n, 3, generator=g), render, latent_dim=3, num_layers=3)


class BandMeans:
    names = ["band0", "band1", "band2"]

    def __call__(self, images):
        return images[:, 0].reshape(len(images), 3, 4, 12).mean(dim=(2, 3))


def banded_curve():
    e = torch.eye(3)
    ones = torch.ones(3) / 3**0.5
    steps = [0.5 * e[0], 0.5 * (e[0] + e[1]) / 2**0.5, 0.5 * e[2], 10 * ones, 0.5 * ones]
    return torch.cumsum(torch.stack([torch.zeros(3)] + steps), dim=0)  # segment i moves by steps[i]


def test_rank_segments_prefers_large_local_edits_and_flags_jumps():
    adapter, codebook = banded_adapter(), banded_curve()
    z = adapter.sample_latents(6, seed=0)
    assert jump_segments(codebook).tolist() == [False, False, False, True, False]
    ranked = rank_segments(adapter, codebook, z, 0.5, coverage=0.9, progress=False)
    order = [r.segment for r in ranked]
    assert set(order[:2]) == {0, 2} and order[2:] == [1, 4, 3]  # one layer, two layers, all three, the jump
    by_segment = {r.segment: r for r in ranked}
    assert by_segment[3].jump and by_segment[3].score is None and by_segment[3].length == pytest.approx(10)
    assert by_segment[0].profile.layers == range(0, 1) and by_segment[2].profile.layers == range(2, 3)
    assert by_segment[1].profile.layers == range(0, 2)
    assert by_segment[4].profile.concentration < 0.05
    # the change is the all-layer edit's mean multi-scale pixel change; the score change x concentration
    d = (codebook[2] - codebook[1]) / (codebook[2] - codebook[1]).norm()
    want = image_change(adapter.render(z, progress=False), adapter.render(z + 0.5 * d, progress=False)).mean()
    assert by_segment[1].change == pytest.approx(want.item(), rel=1e-9)
    assert by_segment[1].score == pytest.approx(by_segment[1].change * by_segment[1].profile.concentration)


def test_rank_segments_with_a_probe_and_a_profile_budget():
    adapter, codebook = banded_adapter(), banded_curve()
    z = adapter.sample_latents(6, seed=0)
    ranked = rank_segments(adapter, codebook, z, 0.5, probe=BandMeans(), coverage=0.9, progress=False)
    by_segment = {r.segment: r for r in ranked}
    assert by_segment[0].probe_top == "band0" and by_segment[0].exclusivity == pytest.approx(1.0)
    assert by_segment[2].probe_top == "band2"
    assert 0.4 < by_segment[1].exclusivity < 0.6  # two bands move about equally
    assert by_segment[1].score == pytest.approx(by_segment[1].change * by_segment[1].profile.concentration
                                                * by_segment[1].exclusivity)
    # only the 2 largest changes are profiled; the rest follow by change, the jump last
    few = rank_segments(adapter, codebook, z, 0.5, profile_top=2, progress=False)
    assert sum(r.profile is not None for r in few) == 2 and few[-1].segment == 3
    unprofiled = [r for r in few if r.profile is None and not r.jump]
    assert [r.change for r in unprofiled] == sorted((r.change for r in unprofiled), reverse=True)
    with pytest.raises(ValueError, match="codebook"):
        rank_segments(adapter, codebook[:1], z, 0.5, progress=False)
    with pytest.raises(ValueError, match="factor"):
        jump_segments(codebook, factor=1.0)
