"""Autograd of the differentiable ops: gradcheck in float64 against finite
differences, opcheck with gradients, the backward under torch.compile, and the
derivative formulas against the plain-PyTorch reference differentiated by autograd."""

import pytest
import torch
from torch.autograd import gradcheck

import sfvq_ext
from sfvq_ext import reference


def curve_and_points(n=24, K=9, D=5):
    c = torch.randn(K, D, dtype=torch.float64, requires_grad=True)
    x = torch.randn(n, D, dtype=torch.float64, requires_grad=True)
    return x, c


def interior_rows(x, c, mode="exact"):
    """Rows whose nearest point lies strictly inside a segment. At a vertex the
    reported (segment, t) jumps between (i, 1) and (i+1, 0): t is not
    differentiable there (point, coord and dist are)."""
    r = sfvq_ext.project(x, c, mode=mode)
    keep = (r.t > 0.02) & (r.t < 0.98)
    assert keep.sum() >= 5, "test input has too few interior rows"
    return x[keep].detach().requires_grad_()


@pytest.mark.parametrize("mode", ["exact", "vertex"])
def test_project_gradcheck_point_coord_dist(mode):
    x, c = curve_and_points()
    # point, coord and dist are continuous everywhere except at ties between segments
    assert gradcheck(lambda x, c: (lambda r: (r.point, r.coord, r.dist))(sfvq_ext.project(x, c, mode=mode)), (x, c))


@pytest.mark.parametrize("mode", ["exact", "vertex"])
def test_project_gradcheck_t(mode):
    x, c = curve_and_points(n=60)
    xi = interior_rows(x, c, mode)
    assert gradcheck(lambda x, c: sfvq_ext.project(x, c, mode=mode).t, (xi, c))


def test_project_gradient_to_x_is_projection_onto_segment():
    """The issue's statement: d point / d x is the projection onto the segment
    direction where 0 < t < 1, and zero where t is clamped."""
    c = torch.tensor([[0.0, 0.0], [2.0, 0.0], [2.0, 2.0]], dtype=torch.float64)
    x = torch.tensor([[0.7, 0.3], [-1.0, -0.5]], dtype=torch.float64, requires_grad=True)  # interior; clamped at c_0
    r = sfvq_ext.project(x, c)
    assert r.segment.tolist() == [0, 0] and 0 < r.t[0] < 1 and r.t[1] == 0
    (gx,) = torch.autograd.grad(r.point[:, 0].sum() + 10 * r.point[:, 1].sum(), x)
    # direction (1, 0): the x-component passes, the y-component does not; the clamped row gets nothing
    torch.testing.assert_close(gx, torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64))


def test_project_gradient_matches_autograd_of_reference_formula():
    """Backward of the op equals autograd through the direct formula for the
    same winning segments (an independent derivation of the same derivative)."""
    x, c = curve_and_points(n=200, K=16, D=7)
    r = sfvq_ext.project(x, c)
    weights = [torch.randn(200, 7, dtype=torch.float64), torch.randn(200, dtype=torch.float64),
               torch.randn(200, dtype=torch.float64)]

    def objective(point, t, dist):
        return (point * weights[0]).sum() + (t * weights[1]).sum() + (dist * weights[2]).sum()

    got = torch.autograd.grad(objective(r.point, r.t, r.dist), (x, c))
    seg = r.segment
    c0, c1 = c[seg], c[seg + 1]
    d = c1 - c0
    t = (((x - c0) * d).sum(-1) / (d * d).sum(-1)).clamp(0, 1)
    point = c0 + t[:, None] * d
    want = torch.autograd.grad(objective(point, t, ((x - point) ** 2).sum(-1)), (x, c))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_decode_gradcheck():
    _, c = curve_and_points(K=8)
    u = torch.rand(40, dtype=torch.float64) * 9 - 1  # some outside [0, 7]: clamped, zero gradient
    u = u[(u - u.round()).abs() > 0.01].requires_grad_()  # kinks at integer coordinates
    assert gradcheck(sfvq_ext.decode, (u, c))


def test_expand_gradcheck():
    _, c = curve_and_points(K=6)
    assert gradcheck(lambda c: sfvq_ext.expand(c, 0.05), (c,))


def test_dithered_quantize_gradcheck():
    x, c = curve_and_points(n=30, K=8)
    r = torch.rand(7, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda x, c, r: sfvq_ext.dithered_quantize(x, c, r)[0], (x, c, r))


def test_dithered_quantize_matches_reference():
    x = torch.randn(500, 6)
    c = torch.randn(10, 6)
    r = torch.rand(9)
    q, seg = sfvq_ext.dithered_quantize(x, c, r)
    points = (1 - r[:, None]) * c[:-1] + r[:, None] * c[1:]
    want, _ = reference.nearest(x, points)
    assert torch.equal(seg, want)
    torch.testing.assert_close(q, points[seg])
    q3, seg3 = sfvq_ext.dithered_quantize(x.reshape(5, 100, 6), c, r)
    assert q3.shape == (5, 100, 6) and torch.equal(seg3.reshape(-1), seg)


def test_dithered_quantize_backward_gives_the_same_bits_every_run():
    # fit's "same seed, same curve" rests on it: the per-segment sum over thousands of rows
    # must not depend on how threads interleave (index_put_ with accumulate did, on 2 threads)
    g = torch.Generator().manual_seed(0)
    x, c, r = torch.randn(4096, 64, generator=g), torch.randn(16, 64, generator=g), torch.rand(15, generator=g)
    q, segment = sfvq_ext.dithered_quantize(x, c, r)
    first = torch.ops.sfvq.dithered_quantize_backward(q - x, c, r, segment)
    for _ in range(20):
        again = torch.ops.sfvq.dithered_quantize_backward(q - x, c, r, segment)
        assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])
    # and it is the float64 sum, up to float32 rounding
    sums = torch.zeros(15, 64, dtype=torch.float64).index_add_(0, segment, (q - x).double())
    rd = r.double()[:, None]
    want = torch.nn.functional.pad(sums * (1 - rd), (0, 0, 0, 1)) + torch.nn.functional.pad(sums * rd, (0, 0, 1, 0))
    torch.testing.assert_close(first[0].double(), want, rtol=1e-5, atol=1e-3)


def test_nearest_gradcheck():
    x, c = curve_and_points()
    assert gradcheck(lambda x, c: sfvq_ext.nearest(x, c)[1], (x, c))


def opcheck_grad_cases():
    x = torch.randn(6, 5, requires_grad=True)
    c = torch.randn(8, 5, requires_grad=True)
    every = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    return [
        ("project", (x, c, "exact"), every),
        ("project", (x.double(), c.double(), "vertex"), every),
        ("decode", (torch.rand(2, 3, dtype=torch.float64, requires_grad=True) * 7, c.double()), every),
        ("expand", (c, 0.01), every),
        ("dithered_quantize", (x, c, torch.rand(7, requires_grad=True)), every),
        ("dithered_quantize_backward", (torch.randn(2, 3, 5), c.detach(), torch.rand(7), torch.randint(0, 7, (2, 3))),
         every),
        # opcheck's aot test sums all outputs into an accumulator typed by the first one;
        # nearest's first output is int64, so that harness cannot add its float distance.
        # Its backward is covered by gradcheck and the compiled test below.
        ("nearest", (x, c), every[:3]),
    ]


@pytest.mark.parametrize("name,args,utils", opcheck_grad_cases())
def test_opcheck_with_gradients(name, args, utils):
    torch.library.opcheck(getattr(torch.ops.sfvq, name).default, args, test_utils=utils)


def test_backward_under_torch_compile():
    x = torch.randn(50, 4)
    c0 = torch.randn(8, 4)
    r = torch.rand(7)

    def loss_fn(x, c, r):
        q, _ = sfvq_ext.dithered_quantize(x, c, r)
        p = sfvq_ext.project(x, c)
        _, nd = sfvq_ext.nearest(x, c)
        return ((x - q) ** 2).mean() + p.dist.mean() + sfvq_ext.decode(p.coord, c).sum() + nd.sum()

    compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager")
    grads = []
    for fn in (loss_fn, compiled):
        c = c0.clone().requires_grad_()
        fn(x, c, r).backward()
        grads.append(c.grad)
    torch.testing.assert_close(grads[1], grads[0])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_gradients_have_input_dtype(dtype):
    x = torch.randn(40, 6).to(dtype).requires_grad_()
    c = torch.randn(8, 6).to(dtype).requires_grad_()
    r = sfvq_ext.project(x, c)
    (r.point.float().sum() + r.dist.sum()).backward()
    assert x.grad.dtype == dtype and c.grad.dtype == dtype
    assert torch.isfinite(x.grad).all() and torch.isfinite(c.grad).all()
