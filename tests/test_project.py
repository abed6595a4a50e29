"""project (exact and vertex rule) against brute force over every segment."""

import pytest
import torch

import sfvq_ext
from sfvq_ext import reference

# Distances computed by the kernel in float64 from the given values; the oracle
# computes the same in float64. Segments whose distance is this close to the
# best count as ties (they reach the same point or an equally near one).
TIE_RTOL = 1e-9


def all_segment_distances(x, codebook):
    x = x.reshape(-1, x.shape[-1]).double()
    return reference._segment_fits(x, codebook.double())[1]


def assert_exact_projection(x, codebook, result):
    """The returned segment is a best segment, its distance is within 1e-6
    relative of the float64 optimum, and point/t/coord agree with each other."""
    dists = all_segment_distances(x, codebook)
    best = dists.min(dim=1).values
    scale = x.double().abs().max().item() ** 2 + codebook.double().abs().max().item() ** 2
    atol = 1e-12 * scale * x.shape[-1]
    seg = result.segment.reshape(-1)
    chosen = dists.gather(1, seg[:, None])[:, 0]
    assert torch.all(chosen <= best * (1 + TIE_RTOL) + atol), "a non-optimal segment was returned"
    got = result.dist.reshape(-1).double()
    assert torch.all((got - best).abs() <= 1e-6 * best + atol), "distance not within 1e-6 of the optimum"
    # internal consistency: coord = segment + t, point = decode(coord)
    torch.testing.assert_close(result.coord.double(), result.segment.double() + result.t.double(), rtol=0, atol=1e-6 * codebook.shape[0])
    expected_point = reference.decode(result.segment.double() + result.t.double(), codebook)
    torch.testing.assert_close(result.point.double(), expected_point.reshape(result.point.shape),
                               rtol=8e-3 if x.dtype in (torch.float16, torch.bfloat16) else 1e-5, atol=1e-5 * scale ** 0.5)


def unique_best_rows(x, codebook):
    dists = all_segment_distances(x, codebook)
    two = dists.topk(2, largest=False).values if dists.shape[1] > 1 else torch.cat([dists, dists + 1], 1)
    return two[:, 1] > two[:, 0] * (1 + 1e-6) + 1e-12, dists.argmin(dim=1)


def curve(kind, K=64, D=16):
    g = torch.Generator().manual_seed(1)
    if kind == "random":
        return torch.randn(K, D, generator=g)
    if kind == "repeated":  # zero-length segments
        c = torch.randn(K, D, generator=g)
        c[5] = c[4]
        c[6] = c[4]
        c[-1] = c[-2]
        return c
    if kind == "collinear_folded":  # along one line, doubling back over itself
        s = torch.tensor([0.0, 1, 2, 1, 0, 3, 2.5, 4] * (K // 8))[:K]
        v = torch.randn(D, generator=g)
        return s[:, None] * v[None]
    if kind == "zigzag":  # every segment covers the same stretch
        a, b = torch.randn(2, D, generator=g)
        return torch.stack([a if j % 2 == 0 else b for j in range(K)])
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["random", "repeated", "collinear_folded", "zigzag"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_matches_brute_force(kind, dtype):
    c = curve(kind).to(dtype)
    x = (torch.randn(1000, c.shape[1]) * 1.5).to(dtype)
    r = sfvq_ext.project(x, c)
    assert r.point.dtype == dtype and r.segment.dtype == torch.int64
    assert r.t.dtype == r.coord.dtype == r.dist.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert_exact_projection(x, c, r)


def test_same_segment_where_no_tie():
    c = curve("random", K=256, D=32)
    x = torch.randn(3000, 32)
    unique, best = unique_best_rows(x, c)
    assert unique.float().mean() > 0.9  # most rows are decisive, so this test can fail
    r = sfvq_ext.project(x, c)
    assert torch.equal(r.segment[unique], best[unique])


@pytest.mark.parametrize("offset,scale", [(100.0, 1.0), (0.0, 1e4), (0.0, 1e-4), (1e4, 10.0)])
def test_far_from_origin_and_extreme_scales(offset, scale):
    # The expanded distance form picks wrong segments here unless the kernel
    # centres on the codebook mean and re-ranks exactly.
    c = curve("random", K=256, D=64) * scale + offset
    x = torch.randn(2000, 64) * scale + offset
    r = sfvq_ext.project(x, c)
    assert_exact_projection(x, c, r)
    unique, best = unique_best_rows(x, c)
    assert torch.equal(r.segment[unique], best[unique])


def test_inputs_beyond_both_ends():
    c = curve("random", K=16, D=8)
    first_dir, last_dir = c[1] - c[0], c[-1] - c[-2]
    x = torch.stack([c[0] - 5 * first_dir, c[-1] + 5 * last_dir])
    r = sfvq_ext.project(x, c)
    assert r.segment.tolist() == [0, 14]
    assert r.t.tolist() == [0.0, 1.0]
    assert r.coord.tolist() == [0.0, 15.0]
    assert torch.equal(r.point, torch.stack([c[0], c[-1]]))
    assert_exact_projection(x, c, r)


def test_exact_ties_pick_smallest_segment():
    # Two mirror-image segments meeting at x's foot point: segment 0 at t=1 and
    # segment 1 at t=0 reach the same vertex.
    c = torch.tensor([[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    r = sfvq_ext.project(torch.tensor([[0.0, 1.0], [0.0, -3.0]]), c)
    assert r.segment.tolist() == [0, 0] and r.t.tolist() == [1.0, 1.0] and r.dist.tolist() == [1.0, 9.0]
    # Two parallel segments (0 and 3) at distance exactly 1 from the origin.
    c = torch.tensor([[-1.0, 1.0], [1.0, 1.0], [5.0, 5.0], [1.0, -1.0], [-1.0, -1.0]])
    r = sfvq_ext.project(torch.zeros(1, 2), c)
    assert r.segment.tolist() == [0] and r.dist.tolist() == [1.0]
    # the zigzag: every segment identical, integer coordinates: ties everywhere
    a, b = torch.tensor([0.0, 0.0]), torch.tensor([2.0, 0.0])
    zig = torch.stack([a, b] * 8)
    r = sfvq_ext.project(torch.tensor([[1.0, 1.0], [3.0, 0.0]]), zig)
    assert r.segment.tolist() == [0, 0]


@pytest.mark.parametrize("K", [2, 3, 4096])
def test_codebook_sizes(K):
    c = torch.randn(K, 8)
    x = torch.randn(300, 8)
    assert_exact_projection(x, c, sfvq_ext.project(x, c))


def test_empty_input():
    c = torch.randn(8, 4)
    r = sfvq_ext.project(torch.empty(0, 4), c)
    assert r.point.shape == (0, 4) and r.segment.shape == (0,)
    r = sfvq_ext.project(torch.empty(3, 0, 4), c)
    assert r.point.shape == (3, 0, 4) and r.dist.shape == (3, 0)


def test_leading_dims_and_non_contiguous():
    c = torch.randn(32, 12)
    x = torch.randn(4, 5, 6, 12)
    r = sfvq_ext.project(x, c)
    assert r.point.shape == (4, 5, 6, 12) and r.segment.shape == (4, 5, 6)
    flat = sfvq_ext.project(x.reshape(-1, 12), c)
    assert torch.equal(r.point.reshape(-1, 12), flat.point) and torch.equal(r.segment.reshape(-1), flat.segment)
    # non-contiguous views of x and of the codebook
    xt = torch.randn(12, 50).t()
    ct = torch.randn(12, 32).t()
    assert not xt.is_contiguous() and not ct.is_contiguous()
    r = sfvq_ext.project(xt, ct)
    assert_exact_projection(xt, ct, r)
    strided = torch.randn(100, 24)[::2, ::2]
    assert_exact_projection(strided, c, sfvq_ext.project(strided, c))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    c = curve("random", K=64, D=16).to(dtype)
    x = (torch.randn(500, 16) + 3).to(dtype)
    r = sfvq_ext.project(x, c)
    assert r.point.dtype == dtype and r.dist.dtype == torch.float32
    assert_exact_projection(x, c, r)


def test_deterministic_across_calls_and_threads():
    c = torch.randn(512, 32)
    x = torch.randn(5000, 32)
    a = sfvq_ext.project(x, c)
    b = sfvq_ext.project(x, c)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        s = sfvq_ext.project(x, c)
    finally:
        torch.set_num_threads(threads)
    for u, v, w in zip(a, b, s):
        assert torch.equal(u, v) and torch.equal(u, w)


# ---------------------------------------------------------------------------
# mode="vertex": the original authors' rule


@pytest.mark.parametrize("kind", ["random", "repeated", "collinear_folded"])
def test_vertex_rule_matches_literal_statement(kind):
    c = curve(kind, K=64, D=16)
    x = torch.randn(2000, 16) * 1.5
    got = sfvq_ext.project(x, c, mode="vertex")
    want = reference.project_vertex_rule(x, c)
    torch.testing.assert_close(got.dist.double(), want.dist, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(got.point.double(), want.point, rtol=1e-5, atol=1e-5)
    # Segment choices agree, except where the two differ by a float64 near-tie
    # (e.g. segments j-1 at t=1 and j at t=0 both reach vertex j).
    dists = all_segment_distances(x, c)
    d_got = dists.gather(1, got.segment[:, None])[:, 0]
    d_want = dists.gather(1, want.segment[:, None])[:, 0]
    near_tie = (d_got - d_want).abs() <= 1e-9 * d_want + 1e-12
    assert torch.all((got.segment == want.segment) | near_tie)
    assert (got.segment == want.segment).float().mean() > 0.9


def test_vertex_rule_matches_authors_code_path():
    # The authors' own formulation (N x D x K tensor, no zero-length segments).
    c = curve("random", K=32, D=8).double()
    x = torch.randn(500, 8, dtype=torch.float64)
    torch.testing.assert_close(sfvq_ext.project(x, c, mode="vertex").point, reference.authors_project(x, c))


def test_vertex_rule_is_never_better_than_exact():
    c = curve("random", K=128, D=16)
    x = torch.randn(2000, 16)
    exact = sfvq_ext.project(x, c)
    vertex = sfvq_ext.project(x, c, mode="vertex")
    assert torch.all(exact.dist <= vertex.dist * (1 + 1e-6))
    assert (exact.dist < vertex.dist * (1 - 1e-4)).any()  # the approximation really does miss


def test_vertex_rule_small_codebooks():
    for K in (2, 3):
        c = torch.randn(K, 4)
        x = torch.randn(50, 4)
        got = sfvq_ext.project(x, c, mode="vertex")
        want = reference.project_vertex_rule(x, c)
        assert torch.equal(got.segment, want.segment)
        torch.testing.assert_close(got.dist.double(), want.dist, rtol=1e-6, atol=1e-9)
