"""Property-based tests (Hypothesis) of every op against the float64 brute force.

Random K, D, N, dtypes and leading shapes; degenerate curves (repeated, collinear,
folded vertices); magnitudes across each dtype's whole finite range, subnormals
included; offsets; and per-column scales mixed within one row. The oracle is
sfvq_ext.reference, which scales each row by a power of two so that float64 never
overflows.

Profiles (tests/conftest.py): "ci" (the default: few examples, derandomized, seconds)
and "long" (thousands of examples, random):

    HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest tests/test_properties.py -q

A failing example the long profile finds is committed as a regular test
(tests/test_numerics.py).
"""

import math

import torch
from hypothesis import given
from hypothesis import strategies as st

import sfvq_ext
from sfvq_ext import reference

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _subnormal_exponent(dtype) -> int:
    """log2 of the dtype's smallest subnormal."""
    info = torch.finfo(dtype)
    return round(math.log2(info.smallest_normal * info.eps))


@st.composite
def problems(draw, min_k=2):
    """(x, codebook): x of a random leading shape, a codebook of K vectors, both in one dtype,
    every value finite in that dtype."""
    dtype = draw(st.sampled_from(DTYPES))
    K = draw(st.integers(min_k, 40))
    D = draw(st.integers(1, 24))
    lead = draw(st.sampled_from([(0,), (1,), (7,), (33,), (3, 5), (2, 1, 4)]))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    info = torch.finfo(dtype)
    top = int(math.log2(info.max))  # values stay below 2^top (randn is below 2^3 here)
    # magnitude: anywhere from the subnormals to the largest finite values
    exponent = draw(st.integers(_subnormal_exponent(dtype) + 4, top - 6))
    # per-column scales within one row, bounded so nothing overflows
    spread = draw(st.integers(0, 12))
    col_exp = torch.randint(-spread, 1, (D,), generator=g)
    offset_exp = draw(st.one_of(st.none(), st.integers(exponent - 4, min(exponent + 24, top - 5))))

    kind = draw(st.sampled_from(["random", "repeated", "collinear", "folded"]))
    base = torch.randn(K, D, generator=g, dtype=torch.float64).clamp(-7, 7)
    if kind == "repeated":  # zero-length segments
        base[torch.randint(0, K, (K // 2,), generator=g)] = base[0].clone()
    elif kind == "collinear":  # every vertex on one line, doubling back
        base = torch.randn(K, 1, generator=g, dtype=torch.float64).clamp(-7, 7) * base[:1]
    elif kind == "folded":  # alternating between two points: all segments overlap
        base = torch.stack([base[0] if j % 2 == 0 else base[1 % K] for j in range(K)])

    n = math.prod(lead)
    near = base[torch.randint(0, K, (n,), generator=g)]
    x = near + torch.randn(n, D, generator=g, dtype=torch.float64).clamp(-7, 7) * draw(st.sampled_from([0.0, 0.01, 1.0, 4.0]))

    def place(v):
        v = torch.ldexp(v, (col_exp + exponent).double())
        if offset_exp is not None:
            v = v + math.ldexp(1.0, offset_exp) * torch.sign(torch.randn(D, generator=g, dtype=torch.float64))
        return v.to(dtype)

    codebook, x = place(base), place(x).reshape(*lead, D)
    if not (torch.isfinite(codebook).all() and torch.isfinite(x).all()):  # rounding up past the maximum
        codebook, x = codebook.clamp(-info.max, info.max), x.clamp(-info.max, info.max)
    return x, codebook


def _tiny(info):
    return 4 * info.smallest_normal * info.eps


def _scaled_table(x, table, segments):
    """The oracle's (N, items) float64 squared distances on each row and the table scaled by
    2^e (every magnitude below 1), and e (N,)."""
    xs, ts, e = reference._scaled(x.reshape(-1, table.shape[1]).double(), table.double())
    if segments:
        return reference._segment_fits(xs, ts)[1], e
    return ((xs[:, None, :] - ts) ** 2).sum(-1), e


def _noise(dist, D):
    """Bound on the float64 rounding of a squared distance ``dist`` computed on scaled data
    (every magnitude below 1): each of the D differences is off by well under 2^-48, so the
    sum of squares is off by at most 2 sqrt(dist) delta + delta^2 with delta = sqrt(D) 2^-48."""
    delta = math.sqrt(D) * 2.0**-48
    return 2 * dist.clamp(min=0).sqrt() * delta + delta * delta


def _assert_best(chosen_index, table, want_index, D, note):
    """chosen_index picks a minimum of the scaled table up to float64 rounding; where the
    minimum is clear, the index is the oracle's."""
    chosen = table.gather(1, chosen_index[:, None])[:, 0]
    best = table.min(dim=1).values
    assert torch.all(chosen <= best + 2 * _noise(best, D)), note
    clear = (table > (best + 2 * _noise(best, D))[:, None]).sum(1) == table.shape[1] - 1
    assert torch.equal(chosen_index[clear], want_index[clear]), note


def _check_distances(got, table, e, x, D):
    """got (the op's distances) is the oracle's minimum up to float64 rounding on the scaled
    data and the output dtype's own rounding: Inf exactly where that allows a value beyond
    the output's range (also when rounding noise of a zero distance crosses it)."""
    info = torch.finfo(torch.float64 if x.dtype == torch.float64 else torch.float32)
    got = got.reshape(-1).double()
    best = table.min(dim=1).values
    slack = 2 * _noise(best, D)  # float64 rounding on scaled data, ours and the oracle's
    rtol = 2 * info.eps
    upper = reference._unscale_squared((best + slack) * (1 + rtol), e)
    lower = reference._unscale_squared((best - slack).clamp(min=0) * (1 - rtol), e)
    assert torch.all(torch.isinf(got[lower > info.max])), "unrepresentable distance must be Inf"
    assert torch.all(upper[torch.isinf(got)] > info.max), "Inf for a representable distance"
    ok = torch.isfinite(got)
    got_scaled = reference._ldexp(got[ok], 2 * e[ok])
    # the output dtype's absolute rounding below its smallest normal, in scaled units
    atol = slack[ok] + reference._ldexp(torch.full_like(got_scaled, _tiny(info)), 2 * e[ok])
    assert torch.all((got_scaled - best[ok]).abs() <= rtol * best[ok] + atol), "distance off the float64 optimum"


@given(problems())
def test_project_exact(problem):
    x, c = problem
    r = sfvq_ext.project(x, c)
    K, D = c.shape
    assert r.point.shape == x.shape and r.segment.shape == x.shape[:-1]
    seg = r.segment.reshape(-1)
    assert seg.numel() == 0 or (int(seg.min()) >= 0 and int(seg.max()) <= K - 2)
    if seg.numel() == 0:
        return
    want = reference.project(x, c)
    table, e = _scaled_table(x, c, segments=True)
    _assert_best(seg, table, want.segment.reshape(-1), D, "exact projection missed the nearest segment")
    _check_distances(r.dist, table, e, x, D)
    # t, coord and the point belong to the returned segment
    torch.testing.assert_close(r.coord.double(), r.segment.double() + r.t.double(), rtol=0, atol=K * 1e-6)
    # (from the returned t, rounded to its dtype: the point itself was made from the float64 t)
    seg_, t_, cd = r.segment.reshape(-1), r.t.reshape(-1, 1).double(), c.double()
    point = ((1 - t_) * cd[seg_] + t_ * cd[seg_ + 1]).reshape(x.shape).to(x.dtype)
    pinfo, tinfo = torch.finfo(x.dtype), torch.finfo(r.t.dtype)
    reach = 2 * float(c.double().abs().max())  # |c_{i+1} - c_i| is at most this
    torch.testing.assert_close(r.point.double(), point.double(), rtol=4 * pinfo.eps,
                               atol=reach * tinfo.eps + _tiny(pinfo))


@given(problems())
def test_project_vertex_rule(problem):
    x, c = problem
    r = sfvq_ext.project(x, c, mode="vertex")
    want = reference.project_vertex_rule(x, c)
    if r.segment.numel() == 0:
        return
    seg = r.segment.reshape(-1)
    assert int(seg.min()) >= 0 and int(seg.max()) <= c.shape[0] - 2
    # where the nearest vertex is clear, the rule's segment is the oracle's (or ties with it)
    D = c.shape[1]
    vdist, _ = _scaled_table(x, c, segments=False)
    table, e = _scaled_table(x, c, segments=True)
    vbest = vdist.min(dim=1).values
    clear_vertex = (vdist > (vbest + 2 * _noise(vbest, D))[:, None]).sum(1) == vdist.shape[1] - 1
    rows = torch.arange(len(seg))
    got_d, want_d = table[rows, seg], table[rows, want.segment.reshape(-1)]
    same_or_tie = (seg == want.segment.reshape(-1)) | ((got_d - want_d).abs() <= 2 * _noise(want_d, D))
    assert torch.all(same_or_tie[clear_vertex])
    chosen = table[rows, want.segment.reshape(-1)][:, None]
    _check_distances(r.dist.reshape(-1)[clear_vertex], chosen[clear_vertex], e[clear_vertex], x, D)


@given(problems(min_k=1))
def test_nearest(problem):
    x, points = problem
    idx, dist = sfvq_ext.nearest(x, points)
    assert idx.shape == x.shape[:-1]
    if idx.numel() == 0:
        return
    want_idx, _ = reference.nearest(x, points)
    table, e = _scaled_table(x, points, segments=False)
    _assert_best(idx.reshape(-1), table, want_idx.reshape(-1), points.shape[1], "nearest missed the nearest point")
    _check_distances(dist, table, e, x, points.shape[1])


@given(problems(), st.floats(0.001, 0.499))
def test_dithered_quantize(problem, r):
    x, c = problem
    dither = torch.full((c.shape[0] - 1,), r, dtype=c.dtype)
    q, seg = sfvq_ext.dithered_quantize(x, c, dither)
    points = torch.lerp(c[:-1], c[1:], dither[:, None])  # as the op forms them
    assert q.shape == x.shape
    if seg.numel() == 0:
        return
    table, _ = _scaled_table(x, points, segments=False)
    _assert_best(seg.reshape(-1), table, reference.nearest(x, points)[0].reshape(-1), c.shape[1], "dithered quantize")
    assert torch.equal(q.reshape(-1, c.shape[1]), points[seg.reshape(-1)])


@given(problems(), st.data())
def test_decode(problem, data):
    _, c = problem
    K = c.shape[0]
    coord_dtype = data.draw(st.sampled_from([torch.float32, torch.float64]))
    coord = torch.tensor(data.draw(st.lists(st.floats(-3, K + 2, allow_nan=False), max_size=20)), dtype=coord_dtype)
    got = sfvq_ext.decode(coord, c)
    want = reference.decode(coord, c)
    info = torch.finfo(c.dtype)
    # one rounding of the float32 (float64) interpolation plus one to the output dtype
    scale = c.double().abs().max()
    torch.testing.assert_close(got.double(), want, rtol=4 * info.eps, atol=float(scale) * 1e-6 + _tiny(info))


@given(problems(), st.floats(0.001, 0.499))
def test_expand(problem, eps):
    _, c = problem
    got = sfvq_ext.expand(c, eps)
    want = reference.expand(c, eps)
    info = torch.finfo(c.dtype)
    scale = c.double().abs().max()
    torch.testing.assert_close(got.double(), want, rtol=4 * info.eps, atol=float(scale) * 1e-6 + _tiny(info))
    # the ends stay exactly where they were
    assert torch.equal(got[0], c[0]) and torch.equal(got[-1], c[-1])
