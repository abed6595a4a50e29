"""The panoptic atlas (issue 23): factor_tracks against rendering and probing the
codebook directly, the panoptic score against its closed forms, and the picture."""

import numpy as np
import pytest
import torch
from PIL import Image

from sfvq_ext.interpret import FactorTracks, draw_atlas, factor_tracks, panoptic_score

pytestmark = pytest.mark.usefixtures("no_network")


@pytest.fixture(scope="module")
def adapter(tiny_stylegan2):
    return tiny_stylegan2


class MeanColour:
    """A probe: the mean of each colour channel, and the brightness of the top half."""

    names = ["red", "green", "blue", "top"]

    def __call__(self, images):
        return torch.cat([images.mean((2, 3)), images[:, :, : images.shape[2] // 2].mean((1, 2, 3))[:, None]], 1)


def test_factor_tracks_are_the_probe_on_each_rendered_vector(adapter):
    codebook = adapter.sample_latents(11, seed=1)
    probe = MeanColour()
    tracks = factor_tracks(adapter, codebook, probe, batch_size=4, progress=False)  # batches of 4, 4, 3
    want = probe(adapter.render(codebook, progress=False)).double()
    assert tracks.names == MeanColour.names and tracks.scores.shape == (11, 4)
    torch.testing.assert_close(tracks.scores, want, rtol=0, atol=1e-6)  # renders in other batches: rounding
    normalized = tracks.normalized()
    assert normalized.min(0).values.eq(0).all() and normalized.max(0).values.eq(1).all()


def test_factor_tracks_reads_given_renders(adapter):
    """Renders passed in are read as they are (exactly the probe on them), not rendered again."""
    codebook = adapter.sample_latents(7, seed=3)
    images = adapter.render(codebook, progress=False)
    probe = MeanColour()
    tracks = factor_tracks(adapter, codebook, probe, images=images, batch_size=3, progress=False)
    assert torch.equal(tracks.scores, torch.cat([probe(part) for part in images.split(3)]).double())
    # other images give other scores: the renders given are what is read
    shifted = factor_tracks(adapter, codebook, probe, images=images.flip(0), batch_size=3, progress=False)
    torch.testing.assert_close(shifted.scores, tracks.scores.flip(0), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="images must be the codebook's 7 renders"):
        factor_tracks(adapter, codebook, probe, images=images[:5], progress=False)


def test_factor_tracks_bad_input(adapter):
    with pytest.raises(ValueError, match="codebook has width 3"):
        factor_tracks(adapter, torch.zeros(4, 3), MeanColour(), progress=False)
    with pytest.raises(ValueError, match=r"probe: must return float scores \(n, F\)"):
        factor_tracks(adapter, adapter.sample_latents(4, seed=0), lambda images: images.mean(), progress=False)
    with pytest.raises(ValueError, match="need 4 distinct names"):
        factor_tracks(adapter, adapter.sample_latents(4, seed=0), MeanColour(), names=["a"], progress=False)


def test_panoptic_score_closed_forms():
    K = 40
    sweep = torch.arange(K, dtype=torch.float64)[:, None]
    torch.testing.assert_close(panoptic_score(sweep), torch.tensor([3 / (K + 1)], dtype=torch.float64))
    # brute force on random values: neighbours over all ordered pairs i != j
    v = torch.randn(9, 3, dtype=torch.float64)
    pairs = [(v[i] - v[j]).abs() for i in range(9) for j in range(9) if i != j]
    want = (v[1:] - v[:-1]).abs().mean(0) / torch.stack(pairs).mean(0)
    torch.testing.assert_close(panoptic_score(v), want)
    # a random order scores 1 on average: the mean over all orders of the neighbour mean is the pair mean
    g = torch.Generator().manual_seed(0)
    scores = torch.stack([panoptic_score(v[torch.randperm(9, generator=g)]) for _ in range(4000)])
    torch.testing.assert_close(scores.mean(0), torch.ones(3, dtype=torch.float64), rtol=0, atol=0.03)
    assert panoptic_score(torch.ones(5, 1)).isnan().all()
    with pytest.raises(ValueError, match="K >= 2"):
        panoptic_score(torch.ones(1, 3))


def test_panoptic_scores_by_name_and_most_ordered():
    """The JSON-ready scores (a constant track: None, not NaN) and the tracks ranked by them."""
    K = 9
    sweep = torch.arange(K, dtype=torch.float64)  # 3 / (K + 1)
    zigzag = torch.tensor([0.0, 1.0] * 4 + [0.0], dtype=torch.float64)
    tracks = FactorTracks(torch.stack([zigzag, torch.ones(K), sweep], 1), ["zigzag", "flat", "sweep"])
    by_name = tracks.panoptic_by_name()
    want = panoptic_score(tracks.scores)
    assert list(by_name) == ["zigzag", "flat", "sweep"] and by_name["flat"] is None
    assert by_name["zigzag"] == want[0].item() and by_name["sweep"] == want[2].item() == pytest.approx(3 / (K + 1))
    assert tracks.most_ordered() == [("sweep", by_name["sweep"]), ("zigzag", by_name["zigzag"])]


def test_draw_atlas_writes_a_picture(adapter, tmp_path):
    codebook = adapter.sample_latents(12, seed=2)
    tracks = factor_tracks(adapter, codebook, MeanColour(), progress=False)
    draw_atlas(tracks, adapter.render(codebook, progress=False), tmp_path / "atlas.png")
    draw_atlas(FactorTracks(tracks.scores, tracks.names), None, tmp_path / "tracks_only.png")
    for name in ("atlas.png", "tracks_only.png"):
        image = np.array(Image.open(tmp_path / name).convert("RGB"))
        assert image.shape[0] > 100 and image.shape[1] >= 800 and image.std() > 10
