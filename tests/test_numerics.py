"""The numeric contract at the edges (DESIGN.md section 6, README "Numeric contract"):
magnitudes across the whole finite range, far rows, exact ties, and curve
coordinates that keep their precision. Every expected value comes from the
float64 brute force of sfvq_ext.reference, which scales inputs by a power of two
(exact) so that it never overflows."""

import math

import pytest
import torch

import sfvq_ext
from sfvq_ext import reference


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def distances_to_all_segments(x, codebook):
    """(N, K-1) float64 squared distances from every row to every segment, each row and
    the codebook scaled by a power of two (exact) so nothing overflows or underflows."""
    xs, cs, _ = reference._scaled(x.reshape(-1, x.shape[-1]).double(), codebook.double())
    return reference._segment_fits(xs, cs)[1]


def assert_matches_oracle(x, codebook, r, dist_rtol):
    """Segment is a best one (ties: the first), t/coord/point agree with it, and dist is the
    oracle's (Inf exactly where the true distance exceeds the output dtype)."""
    K = codebook.shape[0]
    seg = r.segment.reshape(-1)
    assert int(seg.min()) >= 0 and int(seg.max()) <= K - 2, "segment index outside [0, K-2]"
    dists = distances_to_all_segments(x, codebook)
    best = dists.min(dim=1).values
    chosen = dists.gather(1, seg[:, None])[:, 0]
    assert torch.all(chosen <= best * (1 + 1e-12)), "a farther segment was returned"
    want = reference.project(x, codebook)
    torch.testing.assert_close(r.t.reshape(-1).double(), want.t.reshape(-1), rtol=0, atol=1e-5)
    info = torch.finfo(r.dist.dtype)
    got = r.dist.reshape(-1).double()
    true = want.dist.reshape(-1)
    representable = true <= info.max * (1 - 1e-6)
    assert torch.all(torch.isinf(got[true > info.max * (1 + 1e-6)])), "unrepresentable distance must be Inf"
    # below the smallest subnormal a distance rounds to 0; near it, to a few subnormal steps
    torch.testing.assert_close(got[representable], true[representable], rtol=dist_rtol, atol=2 * info.smallest_normal * info.eps)
    point_info = torch.finfo(r.point.dtype)
    torch.testing.assert_close(r.point.reshape(want.point.shape).double(), want.point, rtol=1e-6,
                               atol=2 * point_info.smallest_normal * point_info.eps)


# ---------------------------------------------------------------------------
# 1. The whole floating-point range


@pytest.mark.parametrize("scale", [3e18, 1e30, 5e37, 1e-20, 1e-38, 1e-44])
def test_float32_extreme_magnitudes(scale):
    """The issue's input (3e18: expanded terms overflow float32) and its whole kind:
    huge, tiny and subnormal float32 data; no index -1, no read before the codebook."""
    c = (torch.randn(64, 16, dtype=torch.float64, generator=seeded(1)) * scale).float()
    x = (torch.randn(2000, 16, dtype=torch.float64, generator=seeded(2)) * scale).float()
    r = sfvq_ext.project(x, c)
    assert_matches_oracle(x, c, r, dist_rtol=1e-5)


@pytest.mark.parametrize("scale", [3e153, 1e300, 1e-160, 1e-300, 1e-320])
def test_float64_extreme_magnitudes(scale):
    c = torch.randn(64, 16, dtype=torch.float64, generator=seeded(3)) * scale
    x = torch.randn(500, 16, dtype=torch.float64, generator=seeded(4)) * scale
    r = sfvq_ext.project(x, c)
    assert_matches_oracle(x, c, r, dist_rtol=1e-9)


def test_unrepresentable_distance_is_inf_with_the_right_segment():
    """float32 data near its largest values: distances beyond 3.4e38 are Inf, and the
    segment, t and point are still the float64 answer."""
    c = (torch.rand(32, 8, dtype=torch.float64, generator=seeded(5)) * 3e38 - 1.5e38).float()
    x = (torch.rand(400, 8, dtype=torch.float64, generator=seeded(6)) * 3e38 - 1.5e38).float()
    r = sfvq_ext.project(x, c)
    assert torch.isinf(r.dist).any() and torch.isfinite(r.point).all()
    assert_matches_oracle(x, c, r, dist_rtol=1e-5)


@pytest.mark.parametrize("dtype,far", [(torch.float32, 1e30), (torch.float64, 1e100)])
def test_rows_far_outside_the_codebook_scale(dtype, far):
    """Rows 2^48 and more times the codebook's size away (the GEMM cannot rank them)
    mixed with ordinary rows in one call."""
    c = torch.randn(40, 12, dtype=torch.float64, generator=seeded(7)).to(dtype)
    x = torch.randn(300, 12, dtype=torch.float64, generator=seeded(8))
    x[::3] *= far
    x = x.to(dtype)
    assert_matches_oracle(x, c, sfvq_ext.project(x, c), dist_rtol=1e-6 if dtype == torch.float32 else 1e-12)
    v = sfvq_ext.project(x, c, mode="vertex")
    assert torch.equal(v.segment, reference.project_vertex_rule(x, c).segment)
    idx, dist = sfvq_ext.nearest(x, c)
    want_idx, want_dist = reference.nearest(x, c)
    assert torch.equal(idx, want_idx)
    finite = want_dist <= torch.finfo(dtype).max
    torch.testing.assert_close(dist.double()[finite], want_dist[finite], rtol=1e-6, atol=0)


def test_float64_rows_whose_distance_overflows():
    """1e250 times the codebook's size away: the squared distance (~1e500) is not a float64,
    so it is Inf; the segment is still in range and the point on the curve."""
    c = torch.randn(40, 12, dtype=torch.float64, generator=seeded(7))
    x = torch.randn(30, 12, dtype=torch.float64, generator=seeded(8)) * 1e250
    r = sfvq_ext.project(x, c)
    assert torch.isinf(r.dist).all() and int(r.segment.min()) >= 0 and int(r.segment.max()) <= 38
    torch.testing.assert_close(r.point, reference.decode(r.coord, c))


def test_codebook_tiny_inputs_huge_and_the_reverse():
    for c_scale, x_scale in [(1e-40, 1e30), (1e30, 1e-40)]:
        c = (torch.randn(16, 6, dtype=torch.float64, generator=seeded(9)) * c_scale).float()
        x = (torch.randn(100, 6, dtype=torch.float64, generator=seeded(10)) * x_scale).float()
        r = sfvq_ext.project(x, c)
        assert int(r.segment.min()) >= 0 and int(r.segment.max()) <= 14
        dists = distances_to_all_segments(x, c)
        chosen = dists.gather(1, r.segment[:, None])[:, 0]
        assert torch.all(chosen <= dists.min(dim=1).values * (1 + 1e-12))


@pytest.mark.parametrize("scale", [3e18, 1e-40])
def test_vertex_rule_and_nearest_at_extreme_magnitudes(scale):
    c = (torch.randn(48, 10, dtype=torch.float64, generator=seeded(11)) * scale).float()
    x = (torch.randn(600, 10, dtype=torch.float64, generator=seeded(12)) * scale).float()
    got = sfvq_ext.project(x, c, mode="vertex")
    want = reference.project_vertex_rule(x, c)
    assert torch.equal(got.segment, want.segment)
    tiny = 2 * torch.finfo(torch.float32).smallest_normal * torch.finfo(torch.float32).eps
    torch.testing.assert_close(got.dist.double(), want.dist, rtol=1e-5, atol=tiny)
    idx, dist = sfvq_ext.nearest(x, c)
    want_idx, want_dist = reference.nearest(x, c)
    assert torch.equal(idx, want_idx)
    torch.testing.assert_close(dist.double(), want_dist, rtol=1e-5, atol=tiny)


def test_dithered_quantize_at_extreme_magnitudes():
    c = (torch.randn(32, 8, dtype=torch.float64, generator=seeded(13)) * 3e18).float()
    x = (torch.randn(500, 8, dtype=torch.float64, generator=seeded(14)) * 3e18).float()
    dither = torch.rand(31, generator=seeded(15))
    q, seg = sfvq_ext.dithered_quantize(x, c, dither)
    points = torch.lerp(c[:-1], c[1:], dither[:, None])  # as the op forms them, in float32
    assert torch.equal(seg, reference.nearest(x, points)[0])
    assert torch.equal(q, points[seg])


# ---------------------------------------------------------------------------
# 2. Exact ties go to the smallest index


def test_vertex_ties_go_to_the_smaller_segment():
    """The issue's input: rows whose nearest point is an interior vertex j, reached by
    segment j-1 at t = 1 and segment j at t = 0 with equal distances in exact arithmetic."""
    c = torch.randn(64, 512, generator=seeded(0))
    x = c[1:63].repeat(20, 1) + 0.3 * torch.randn(1240, 512, generator=seeded(1))
    r = sfvq_ext.project(x, c)
    want = reference.project(x, c)  # its distances are tie-exact too (one formula)
    at_vertex = (want.t == 1.0) & (want.segment < 62)
    assert at_vertex.sum() > 100  # the kind is common, so this test can fail
    assert torch.equal(r.segment, want.segment)
    assert torch.all(r.t[at_vertex] == 1.0)
    # the vertex rule and nearest break the same ties the same way
    v = sfvq_ext.project(x, c, mode="vertex")
    assert torch.equal(v.segment, reference.project_vertex_rule(x, c).segment)


def test_nearest_ties_go_to_the_smallest_index():
    p = torch.randn(20, 32, generator=seeded(2))
    points = torch.cat([p, p, p[:5]])  # every point repeated
    x = p[torch.randint(0, 20, (500,), generator=seeded(3))] + 0.2 * torch.randn(500, 32, generator=seeded(4))
    idx, _ = sfvq_ext.nearest(x, points)
    assert torch.equal(idx, reference.nearest(x, points)[0])
    assert int(idx.max()) < 20


def test_fitted_curve_ties_follow_the_documented_rule():
    """On a curve fitted by sfvq_ext.fit, many rows sit at a vertex; every one of them
    gets the smaller segment (t = 1), as the oracle says."""
    data = torch.randn(3000, 16, generator=seeded(5))
    curve = sfvq_ext.fit(data, 4, epochs=2, batch_size=128, seed=0, progress=False)
    r = curve.project(data)
    want = reference.project(data, curve.codebook)
    assert torch.equal(r.segment, want.segment)


# ---------------------------------------------------------------------------
# 3. Coordinates keep their precision


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_decode_does_not_round_coordinates_to_the_codebook_dtype(dtype):
    c = torch.randn(4096, 8, generator=seeded(6)).to(dtype)
    coord = 3000 + torch.linspace(0, 1, 5, dtype=torch.float64)  # bf16 spacing is 16 here
    got = sfvq_ext.decode(coord, c)
    want = reference.decode(coord, c).to(dtype)
    assert torch.equal(got, want)
    assert len({tuple(row.tolist()) for row in got.float()}) == 5
    # the backward splits the coordinate in float64 too
    cg = c.float().requires_grad_()
    coord32 = torch.tensor([3000.25, 3000.75], dtype=torch.float64, requires_grad=True)
    sfvq_ext.decode(coord32, cg).sum().backward()
    grad = cg.grad
    torch.testing.assert_close(grad[3000], torch.full((8,), 0.75 + 0.25))
    torch.testing.assert_close(grad[3001], torch.full((8,), 0.25 + 0.75))


def test_projection_coordinates_are_float32_or_better():
    c = torch.randn(1024, 4, generator=seeded(7)).bfloat16()
    x = c[700:702].float() * 0.5 + c[701:703].float() * 0.5
    r = sfvq_ext.project(x.bfloat16(), c)
    assert r.t.dtype == r.coord.dtype == torch.float32
    torch.testing.assert_close(r.coord.double(), r.segment.double() + r.t.double())
    assert torch.all((r.coord - r.coord.floor()) > 0)  # not rounded onto a vertex


def test_inf_and_nan_are_still_refused():
    c = torch.randn(8, 4)
    for bad in (math.inf, math.nan):
        x = torch.randn(10, 4)
        x[7, 2] = bad
        with pytest.raises(ValueError, match="row 7"):
            sfvq_ext.project(x, c)
        with pytest.raises(ValueError, match="row 7"):
            sfvq_ext.nearest(x, c)


# ---------------------------------------------------------------------------
# Found by the long Hypothesis profile (tests/test_properties.py), kept as regular tests


@pytest.mark.parametrize("dtype,scale", [(torch.float64, 1e169), (torch.float64, 1.0), (torch.float32, 3e18)])
def test_rows_exactly_on_a_vertex(dtype, scale):
    """x equal to vertex j: t was p * (1/b), which can round to 1 - 2^-53 on segment j-1,
    so segment j (t = 0, distance exactly 0) won what is an exact tie. Now t is exactly 1
    there and segment j-1 is returned, in both modes (7-D vertices in general position:
    no other segment passes through them)."""
    c = (torch.randn(9, 7, dtype=torch.float64, generator=seeded(20)) * scale).to(dtype)
    x = c[1:8].clone()
    for mode in ("exact", "vertex"):
        r = sfvq_ext.project(x, c, mode=mode)
        assert r.segment.tolist() == list(range(7)), mode
        assert torch.all(r.t == 1.0) and torch.all(r.dist == 0) and torch.equal(r.point, x), mode
    assert torch.equal(reference.project(x, c).segment, torch.arange(7))
