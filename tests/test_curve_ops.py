"""nearest, decode, expand and init_codebook against their plain statements."""

import pytest
import torch

import sfvq_ext
from sfvq_ext import reference


@pytest.mark.parametrize("offset", [0.0, 100.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_nearest_matches_brute_force(offset, dtype):
    pts = (torch.randn(300, 24) + offset).to(dtype)
    x = (torch.randn(2000, 24) + offset).to(dtype)
    index, dist = sfvq_ext.nearest(x, pts)
    want_index, want_dist = reference.nearest(x, pts)
    all_d = ((x.double()[:, None] - pts.double()[None]) ** 2).sum(-1)
    chosen = all_d.gather(1, index[:, None])[:, 0]
    assert torch.all(chosen <= want_dist * (1 + 1e-9))
    torch.testing.assert_close(dist.double(), want_dist, rtol=1e-6, atol=1e-9)
    two = all_d.topk(2, largest=False).values
    decisive = two[:, 1] > two[:, 0] * (1 + 1e-9)
    assert torch.equal(index[decisive], want_index[decisive])


def test_nearest_ties_and_shapes():
    pts = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]])
    index, dist = sfvq_ext.nearest(torch.tensor([[0.0, 0.0], [2.0, 0.0]]), pts)
    assert index.tolist() == [0, 0] and dist.tolist() == [1.0, 1.0]
    index, dist = sfvq_ext.nearest(torch.randn(2, 3, 2), pts)
    assert index.shape == (2, 3) and dist.shape == (2, 3)
    index, _ = sfvq_ext.nearest(torch.randn(5, 2), pts[:1])  # a single point
    assert index.tolist() == [0] * 5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_decode_matches_reference(dtype):
    c = torch.randn(10, 6).to(dtype)
    u = torch.tensor([[-3.0, 0.0, 0.25, 1.0], [4.5, 8.999, 9.0, 20.0]])
    got = sfvq_ext.decode(u, c)
    assert got.shape == (2, 4, 6) and got.dtype == dtype
    torch.testing.assert_close(got.double(), reference.decode(u, c), rtol=1e-3 if dtype == torch.float16 else 1e-6, atol=1e-3 if dtype == torch.float16 else 1e-6)
    # integer coordinates give the codebook vectors exactly; out-of-range clamps to the ends
    assert torch.equal(sfvq_ext.decode(torch.arange(10.0), c), c)
    assert torch.equal(got[0, 0], c[0]) and torch.equal(got[1, 3], c[-1])


def test_decode_inverts_project():
    c = torch.randn(64, 8, dtype=torch.float64)
    r = sfvq_ext.project(torch.randn(500, 8, dtype=torch.float64), c)
    torch.testing.assert_close(sfvq_ext.decode(r.coord, c), r.point)


@pytest.mark.parametrize("K", [2, 4, 7, 64])
def test_expand(K):
    c = torch.randn(K, 5)
    e = sfvq_ext.expand(c, eps=0.01)
    assert e.shape == (2 * K, 5)
    torch.testing.assert_close(e.double(), reference.expand(c, 0.01), rtol=1e-6, atol=1e-6)
    half = K // 2
    # old vertices survive exactly, including both ends
    assert torch.equal(e[0:2 * half:2], c[:half]) and torch.equal(e[2 * half + 1::2], c[half:])
    assert torch.equal(e[0], c[0]) and torch.equal(e[-1], c[-1])
    # every new vertex lies on the old curve: projecting it gives distance ~0
    assert sfvq_ext.project(e, c).dist.max() < 1e-10


def test_expand_default_eps_and_doubles_repeatedly():
    c = torch.randn(4, 3, dtype=torch.float64)
    e = c
    for _ in range(3):
        e = sfvq_ext.expand(e)
    assert e.shape == (32, 3)
    torch.testing.assert_close(e, reference.expand(reference.expand(reference.expand(c))))


def test_init_codebook():
    sample = torch.randn(1003, 7) * torch.linspace(0.1, 3, 1003)[:, None]
    got = sfvq_ext.init_codebook(sample)
    assert got.shape == (4, 7) and got.dtype == sample.dtype
    torch.testing.assert_close(got.double(), reference.init_codebook(sample), rtol=1e-5, atol=1e-6)
    exact = torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0], [6.0], [7.0], [8.0], [100.0]])
    assert sfvq_ext.init_codebook(exact).flatten().tolist() == [1.5, 3.5, 5.5, 7.5]  # remainder dropped
