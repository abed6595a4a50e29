"""CUDA project/nearest against brute force, the CPU kernels and the reference.

The fused kernel scores candidates with TF32 products and certifies its answer
(rows it cannot certify go to a float64 brute-force kernel), so every case here
is run three times: through the fused path, with every row forced through the
brute-force kernel, and with the small-codebook kernel switched on (it takes
aligned float32 inputs with K <= 32 and D <= 512; other cases run the fused
path again). Skipped only when no CUDA device is present.
"""

import pytest
import torch

import sfvq_ext
from sfvq_ext import reference
from conftest import requires_cuda
from test_project import assert_exact_projection, curve, unique_best_rows

pytestmark = requires_cuda
if torch.cuda.is_available():
    from sfvq_ext import _C_cuda as _C  # the CUDA kernels' module and its test hooks


@pytest.fixture(params=["fused", "brute_force", "small_k"])
def path(request):
    _C._cuda_force_fallback(request.param == "brute_force")
    _C._cuda_small_k_kernel(request.param == "small_k")
    yield request.param
    _C._cuda_force_fallback(False)
    _C._cuda_small_k_kernel(False)


@pytest.fixture
def small_k():
    _C._cuda_small_k_kernel(True)
    yield
    _C._cuda_small_k_kernel(False)


def project_cuda(x, c, mode="exact"):
    r = sfvq_ext.project(x.cuda(), c.cuda(), mode=mode)
    assert all(v.device.type == "cuda" for v in r)
    return sfvq_ext.Projection(*(v.cpu() for v in r))


def brute_force_fraction():
    rows, brute = _C._cuda_last_search_stats()
    return brute / max(rows, 1)


@pytest.mark.parametrize("kind", ["random", "repeated", "collinear_folded", "zigzag"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_matches_brute_force(kind, dtype, path):
    c = curve(kind).to(dtype)
    x = (torch.randn(1000, c.shape[1]) * 1.5).to(dtype)
    r = project_cuda(x, c)
    assert r.point.dtype == dtype and r.segment.dtype == torch.int64
    assert r.dist.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert_exact_projection(x, c, r)


def test_fused_path_certifies_most_rows():
    # Performance rests on this; the answers are exact either way.
    c = curve("random", K=256, D=64)
    x = torch.randn(20000, 64)
    r = project_cuda(x, c)
    assert brute_force_fraction() < 0.05
    cpu = sfvq_ext.project(x, c)
    unique, best = unique_best_rows(x, c)
    assert torch.equal(r.segment[unique], best[unique])
    torch.testing.assert_close(r.dist, cpu.dist, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(r.point, cpu.point, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("offset,scale", [(100.0, 1.0), (0.0, 1e4), (0.0, 1e-4), (1e4, 10.0)])
@pytest.mark.parametrize("K", [256, 24])  # 24: the small-codebook kernel's certificate too
def test_far_from_origin_and_extreme_scales(offset, scale, K, path):
    c = curve("random", K=K, D=64) * scale + offset
    x = torch.randn(2000, 64) * scale + offset
    r = project_cuda(x, c)
    if path == "small_k" and K <= 32:
        assert _C._cuda_last_search_kernel() == "small_k"
    assert_exact_projection(x, c, r)
    unique, best = unique_best_rows(x, c)
    assert torch.equal(r.segment[unique], best[unique])


# Tile edges: BN = 128 columns (the last column is carried into the next tile),
# BK = 32 input dimensions, BM = 128 rows; D % 4 != 0 takes the generic loader.
@pytest.mark.parametrize("K", [2, 3, 5, 6, 127, 128, 129, 130, 257, 1100])
def test_codebook_sizes_across_tile_edges(K, path):
    c = torch.randn(K, 24)
    x = c[torch.randint(0, K, (300,))] + 0.3 * torch.randn(300, 24)
    assert_exact_projection(x, c, project_cuda(x, c))


@pytest.mark.parametrize("D", [1, 2, 3, 4, 31, 32, 33, 36, 100, 515])
def test_widths_across_tile_edges(D, path):
    c = torch.randn(40, D)
    x = torch.randn(129, D) * 1.2
    assert_exact_projection(x, c, project_cuda(x, c))


def test_misaligned_and_strided_inputs(path):
    c = torch.randn(64, 32)
    x = torch.randn(257, 32)
    # 4-byte offset, not 16-byte aligned; made on the device (.cuda() of a CPU view would copy it aligned)
    misaligned = torch.zeros(257 * 32 + 1, device="cuda")[1:].view(257, 32).copy_(x.cuda())
    r = sfvq_ext.project(misaligned, c.cuda())
    assert_exact_projection(x, c, sfvq_ext.Projection(*(v.cpu() for v in r)))
    xt = torch.randn(32, 300).t()
    assert_exact_projection(xt, c, project_cuda(xt, c))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype, path):
    c = curve("random", K=64, D=16).to(dtype)
    x = (torch.randn(500, 16) + 3).to(dtype)
    r = project_cuda(x, c)
    assert r.point.dtype == dtype and r.dist.dtype == torch.float32
    assert_exact_projection(x, c, r)


def test_exact_ties_pick_smallest_segment(path):
    c = torch.tensor([[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    r = project_cuda(torch.tensor([[0.0, 1.0], [0.0, -3.0]]), c)
    assert r.segment.tolist() == [0, 0] and r.t.tolist() == [1.0, 1.0] and r.dist.tolist() == [1.0, 9.0]
    c = torch.tensor([[-1.0, 1.0], [1.0, 1.0], [5.0, 5.0], [1.0, -1.0], [-1.0, -1.0]])
    r = project_cuda(torch.zeros(1, 2), c)
    assert r.segment.tolist() == [0] and r.dist.tolist() == [1.0]
    a, b = torch.tensor([0.0, 0.0]), torch.tensor([2.0, 0.0])
    r = project_cuda(torch.tensor([[1.0, 1.0], [3.0, 0.0]]), torch.stack([a, b] * 8))
    assert r.segment.tolist() == [0, 0]


def test_inputs_beyond_both_ends(path):
    c = curve("random", K=16, D=8)
    x = torch.stack([c[0] - 5 * (c[1] - c[0]), c[-1] + 5 * (c[-1] - c[-2])])
    r = project_cuda(x, c)
    assert r.segment.tolist() == [0, 14] and r.t.tolist() == [0.0, 1.0]
    assert torch.equal(r.point, torch.stack([c[0], c[-1]]))


@pytest.mark.parametrize("kind", ["random", "repeated", "collinear_folded"])
def test_vertex_rule(kind, path):
    c = curve(kind, K=64, D=16)
    x = torch.randn(2000, 16) * 1.5
    got = project_cuda(x, c, mode="vertex")
    want = reference.project_vertex_rule(x, c)
    torch.testing.assert_close(got.dist.double(), want.dist, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(got.point.double(), want.point, rtol=1e-5, atol=1e-5)
    # Segments j-1 at t=1 and j at t=0 both reach vertex j (frequent under this
    # rule): float64 rounding may pick either, elsewhere the choice must agree.
    dists = reference._segment_fits(x.double(), c.double())[1]
    d_got = dists.gather(1, got.segment[:, None])[:, 0]
    d_want = dists.gather(1, want.segment[:, None])[:, 0]
    near_tie = (d_got - d_want).abs() <= 1e-9 * d_want + 1e-12
    assert torch.all((got.segment == want.segment) | near_tie)
    assert (got.segment == want.segment).float().mean() > 0.9
    for K in (2, 3):
        small = torch.randn(K, 4)
        xs = torch.randn(50, 4)
        got, want = project_cuda(xs, small, "vertex"), reference.project_vertex_rule(xs, small)
        # Segments 0 at t=1 and 1 at t=0 both reach vertex 1: float64 rounding picks either.
        near_tie = (got.dist.double() - want.dist).abs() <= 1e-6 * want.dist
        assert torch.all((got.segment == want.segment) | near_tie)
        torch.testing.assert_close(got.dist.double(), want.dist, rtol=1e-6, atol=1e-9)


# The small-codebook kernel. Each test asserts that it ran (eligible inputs) and
# that it certified most rows itself (a kernel sending every row to brute force
# would be exact but pointless).


def project_small_k(x, c, mode="exact"):
    r = project_cuda(x, c, mode)
    assert _C._cuda_last_search_kernel() == "small_k"
    return r


# Codebook sizes around its K = 16 and 32 variants, widths around its 1, 2 and 4
# float4s per lane (388: the last group partly filled), and more rows than its
# persistent grid has warps (each warp strides over rows, prefetching the next).
@pytest.mark.parametrize("K", [2, 3, 15, 16, 17, 31, 32])
@pytest.mark.parametrize("D", [4, 128, 132, 388, 512])
def test_small_k_kernel_matches_brute_force(K, D, small_k):
    g = torch.Generator().manual_seed(K * 10000 + D)
    c = torch.randn(K, D, generator=g)
    x = c[torch.randint(0, K, (3000,), generator=g)] + 0.5 * torch.randn(3000, D, generator=g)
    x[:1000] = torch.randn(1000, D, generator=g) * 2  # rows away from the curve too
    r = project_small_k(x, c)
    assert brute_force_fraction() < 0.05
    assert_exact_projection(x, c, r)
    unique, best = unique_best_rows(x, c)
    assert torch.equal(r.segment[unique], best[unique])

    index, dist = sfvq_ext.nearest(x.cuda(), c.cuda())
    assert _C._cuda_last_search_kernel() == "small_k" and brute_force_fraction() < 0.05
    d = torch.cdist(x.double(), c.double()) ** 2
    assert torch.all(d.gather(1, index.cpu()[:, None])[:, 0] <= d.min(1).values * (1 + 1e-9) + 1e-12)
    torch.testing.assert_close(dist.cpu().double(), d.min(1).values, rtol=1e-6, atol=1e-6)

    got, want = project_small_k(x, c, "vertex"), reference.project_vertex_rule(x, c)
    torch.testing.assert_close(got.dist.double(), want.dist, rtol=1e-6, atol=1e-6)
    # Where the segments differ, j-1 at t=1 and j at t=0 must be a float64 near-tie.
    dists = reference._segment_fits(x.double(), c.double())[1]
    d_got, d_want = dists.gather(1, got.segment[:, None])[:, 0], dists.gather(1, want.segment[:, None])[:, 0]
    same = got.segment == want.segment
    assert torch.all(same | ((d_got - d_want).abs() <= 1e-9 * d_want + 1e-12))
    torch.testing.assert_close(got.point[same].double(), want.point[same], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["random", "repeated", "collinear_folded", "zigzag"])
def test_small_k_kernel_degenerate_curves(kind, small_k):
    # Folded, repeated and overlapping segments: near-ties the certificate must
    # refuse (those rows go to brute force) without refusing everything.
    c = curve(kind, K=32, D=16)
    x = torch.randn(2000, 16) * 1.5
    assert_exact_projection(x, c, project_small_k(x, c))
    if kind == "random":
        assert brute_force_fraction() < 0.05


def test_small_k_kernel_ties_pick_smallest_index(small_k):
    # The tie cases of test_exact_ties_pick_smallest_segment, padded to D = 4 (zeros) so they are eligible.
    def pad(t):
        return torch.nn.functional.pad(t, (0, 4 - t.shape[-1]))

    c = pad(torch.tensor([[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]]))
    r = project_small_k(pad(torch.tensor([[0.0, 1.0], [0.0, -3.0]])), c)
    assert r.segment.tolist() == [0, 0] and r.t.tolist() == [1.0, 1.0] and r.dist.tolist() == [1.0, 9.0]
    c = pad(torch.tensor([[-1.0, 1.0], [1.0, 1.0], [5.0, 5.0], [1.0, -1.0], [-1.0, -1.0]]))
    r = project_small_k(torch.zeros(1, 4), c)
    assert r.segment.tolist() == [0] and r.dist.tolist() == [1.0]
    a, b = torch.tensor([0.0, 0.0, 0.0, 0.0]), torch.tensor([2.0, 0.0, 0.0, 0.0])
    r = project_small_k(pad(torch.tensor([[1.0, 1.0], [3.0, 0.0]])), torch.stack([a, b] * 8))
    assert r.segment.tolist() == [0, 0]
    points = pad(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]]))
    index, _ = sfvq_ext.nearest(pad(torch.tensor([[2.0, 0.0], [0.0, 0.0]])).cuda(), points.cuda())
    assert _C._cuda_last_search_kernel() == "small_k" and index.tolist() == [0, 0]


def test_small_k_kernel_many_rows_matches_fused(small_k):
    c = torch.randn(16, 512).cuda()
    x = torch.randn(200_000, 512).cuda() * 1.3
    got = sfvq_ext.project(x, c)
    assert _C._cuda_last_search_kernel() == "small_k" and brute_force_fraction() < 0.05
    _C._cuda_small_k_kernel(False)
    want = sfvq_ext.project(x, c)
    assert _C._cuda_last_search_kernel() == "fused"
    # Both are exact: the same segments except at float64 near-ties.
    torch.testing.assert_close(got.dist, want.dist, rtol=1e-6, atol=1e-6)
    same = got.segment == want.segment
    assert same.float().mean() > 0.999
    assert torch.equal(got.point[same], want.point[same])


@pytest.mark.parametrize("case", ["K=33", "D=516", "float64", "float16", "misaligned", "D % 4 != 0"])
def test_small_k_kernel_leaves_other_inputs_to_the_fused_kernel(case, small_k):
    K, D, dtype = 16, 64, torch.float32
    if case == "K=33":
        K = 33
    if case == "D=516":
        D = 516
    if case == "D % 4 != 0":
        D = 30
    if case in ("float64", "float16"):
        dtype = getattr(torch, case)
    c = torch.randn(K, D).to(dtype)
    x = torch.randn(200, D).to(dtype)
    x_gpu = x.cuda()
    if case == "misaligned":  # made on the device: .cuda() of a CPU view would allocate afresh, aligned
        x_gpu = torch.zeros(200 * D + 1, device="cuda")[1:].view(200, D).copy_(x_gpu)
    r = sfvq_ext.project(x_gpu, c.cuda())
    assert _C._cuda_last_search_kernel() == "fused"
    assert_exact_projection(x, c, sfvq_ext.Projection(*(v.cpu() for v in r)))


@pytest.mark.parametrize("M", [1, 2, 7, 128, 129, 1000])
def test_nearest_matches_brute_force(M, path):
    points = torch.randn(M, 20)
    x = torch.randn(700, 20)
    index, dist = sfvq_ext.nearest(x.cuda(), points.cuda())
    d = torch.cdist(x.double(), points.double()) ** 2
    best = d.min(1).values
    chosen = d.gather(1, index.cpu()[:, None])[:, 0]
    assert torch.all(chosen <= best * (1 + 1e-9) + 1e-12)
    torch.testing.assert_close(dist.cpu().double(), best, rtol=1e-6, atol=1e-6)


def test_nearest_ties_pick_smallest_index(path):
    points = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    index, _ = sfvq_ext.nearest(torch.tensor([[2.0, 0.0], [0.0, 0.0]]).cuda(), points.cuda())
    assert index.tolist() == [0, 0]


def test_large_problem_matches_cpu_kernel():
    c = torch.randn(1024, 512)
    x = c[torch.randint(0, 1024, (8192,))] * 0.7 + 0.5 * torch.randn(8192, 512)
    gpu = project_cuda(x, c)
    cpu = sfvq_ext.project(x, c)
    same = gpu.segment == cpu.segment
    # Where the segments differ, both must be float64 near-ties.
    torch.testing.assert_close(gpu.dist, cpu.dist, rtol=1e-6, atol=1e-6)
    assert same.float().mean() > 0.99
    torch.testing.assert_close(gpu.point[same], cpu.point[same], rtol=1e-5, atol=1e-5)


def test_empty_and_leading_dims():
    c = torch.randn(8, 4).cuda()
    r = sfvq_ext.project(torch.empty(0, 4).cuda(), c)
    assert r.point.shape == (0, 4) and r.segment.shape == (0,)
    x = torch.randn(3, 5, 4).cuda()
    r = sfvq_ext.project(x, c)
    flat = sfvq_ext.project(x.reshape(-1, 4), c)
    assert r.point.shape == (3, 5, 4) and torch.equal(r.segment.reshape(-1), flat.segment)


def test_deterministic():
    c = torch.randn(512, 64).cuda()
    x = torch.randn(10000, 64).cuda()
    a, b = sfvq_ext.project(x, c), sfvq_ext.project(x, c)
    for u, v in zip(a, b):
        assert torch.equal(u, v)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("op", ["project", "nearest"])
def test_non_finite_rows_raise(bad, op, path):
    x = torch.randn(2, 300, 4)
    x[1, 7, 2] = bad
    x[1, 200, 0] = bad
    with pytest.raises(ValueError, match=r"x contains NaN or Inf \(first at row 307"):
        getattr(sfvq_ext, op)(x.cuda(), torch.randn(8, 4).cuda())


def test_non_default_stream_and_device_guard():
    c = torch.randn(64, 16).cuda()
    x = torch.randn(1000, 16).cuda()
    want = sfvq_ext.project(x, c)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        got = sfvq_ext.project(x, c)
    stream.synchronize()
    assert torch.equal(got.segment, want.segment) and torch.equal(got.point, want.point)


@pytest.mark.parametrize(
    "op,args",
    [
        ("project", lambda x, c: (x, c, "exact")),
        ("project", lambda x, c: (x.reshape(2, 3, 5), c, "vertex")),
        ("project", lambda x, c: (x.double(), c.double(), "exact")),
        ("nearest", lambda x, c: (x, c)),
        ("decode", lambda x, c: (torch.rand(2, 3, device="cuda") * 7, c)),
        ("expand", lambda x, c: (c, 0.01)),
    ],
)
def test_opcheck_cuda(op, args):
    x, c = torch.randn(6, 5, device="cuda"), torch.randn(8, 5, device="cuda")
    torch.library.opcheck(getattr(torch.ops.sfvq, op).default, args(x, c))


def test_torch_compile_cuda():
    @torch.compile(fullgraph=True, backend="aot_eager")
    def quantize(x, c):
        r = sfvq_ext.project(x, c)
        return r.point * 2, r.coord + 1

    x, c = torch.randn(100, 8, device="cuda"), torch.randn(16, 8, device="cuda")
    point, coord = quantize(x, c)
    r = sfvq_ext.project(x, c)
    assert torch.equal(point, r.point * 2) and torch.equal(coord, r.coord + 1)


# ---------------------------------------------------------------------------
# Training on CUDA: autograd, the module, fit.


def test_gradcheck_cuda():
    x = torch.randn(30, 5, dtype=torch.float64, device="cuda", requires_grad=True)
    c = torch.randn(8, 5, dtype=torch.float64, device="cuda", requires_grad=True)
    r = torch.rand(7, dtype=torch.float64, device="cuda", requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, c: (lambda p: (p.point, p.coord, p.dist))(sfvq_ext.project(x, c)), (x, c))
    assert torch.autograd.gradcheck(lambda x, c, r: sfvq_ext.dithered_quantize(x, c, r)[0], (x, c, r))


def test_opcheck_dithered_quantize_cuda():
    x = torch.randn(20, 5, device="cuda", requires_grad=True)
    c = torch.randn(8, 5, device="cuda", requires_grad=True)
    torch.library.opcheck(torch.ops.sfvq.dithered_quantize.default, (x, c, torch.rand(7, device="cuda")))


def test_module_train_step_matches_cpu():
    x = torch.randn(500, 6)
    results = []
    for device in ("cpu", "cuda"):
        m = sfvq_ext.SFVQ(6, 4, gradient="none", start_bits=4, device=device)
        m.initialize(x)  # the same starting curve (computed on the CPU) on both devices
        m.generator = torch.Generator().manual_seed(4)  # the same dither on both devices
        q, idx, loss = m(x.to(device))
        loss.backward()
        results.append((q.cpu(), idx.cpu(), m.weight.grad.cpu()))
    (q0, i0, g0), (q1, i1, g1) = results
    assert torch.equal(i0, i1)
    torch.testing.assert_close(q1, q0)
    torch.testing.assert_close(g1, g0, rtol=1e-4, atol=1e-6)


def test_fit_on_cuda_matches_cpu():
    x = torch.randn(256, 5, generator=torch.Generator().manual_seed(2))
    cpu = sfvq_ext.fit(x, 3, epochs=1, batch_size=32, progress=False)
    gpu = sfvq_ext.fit(x, 3, epochs=1, batch_size=32, progress=False, device="cuda")
    assert gpu.codebook.device.type == "cuda"
    # reductions run in another order on the GPU: float rounding only
    torch.testing.assert_close(gpu.codebook.cpu(), cpu.codebook, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------
# The numeric contract at the edges (tests/test_numerics.py on the CPU): the same
# float64 oracle, through every path. Magnitudes outside the fused kernel's float32
# range are rescaled by a power of two on the host and brute-forced.


@pytest.mark.parametrize("scale", [3e18, 1e30, 5e37, 1e-20, 1e-38, 1e-44])
def test_extreme_magnitudes_float32(scale, path):
    from test_numerics import assert_matches_oracle

    g = torch.Generator().manual_seed(1)
    c = (torch.randn(64, 16, dtype=torch.float64, generator=g) * scale).float()
    x = (torch.randn(2000, 16, dtype=torch.float64, generator=g) * scale).float()
    assert_matches_oracle(x, c, project_cuda(x, c), dist_rtol=1e-5)
    idx, dist = sfvq_ext.nearest(x.cuda(), c.cuda())
    assert torch.equal(idx.cpu(), reference.nearest(x, c)[0])


@pytest.mark.parametrize("scale", [3e153, 1e-160])
def test_extreme_magnitudes_float64(scale, path):
    from test_numerics import assert_matches_oracle

    g = torch.Generator().manual_seed(3)
    c = torch.randn(64, 16, dtype=torch.float64, generator=g) * scale
    x = torch.randn(500, 16, dtype=torch.float64, generator=g) * scale
    assert_matches_oracle(x, c, project_cuda(x, c), dist_rtol=1e-9)


def test_far_rows_mixed_with_ordinary_rows(path):
    from test_numerics import assert_matches_oracle

    g = torch.Generator().manual_seed(7)
    c = torch.randn(40, 12, generator=g)
    x = torch.randn(300, 12, generator=g)
    x[::3] *= 1e30  # their float32 squared norms overflow
    assert_matches_oracle(x, c, project_cuda(x, c), dist_rtol=1e-6)


def test_vertex_ties_go_to_the_smaller_segment_cuda(path):
    g = torch.Generator().manual_seed(0)
    c = torch.randn(64, 512, generator=g)
    x = c[1:63].repeat(20, 1) + 0.3 * torch.randn(1240, 512, generator=g)
    want = reference.project(x, c)
    assert torch.equal(project_cuda(x, c).segment, want.segment)
    assert torch.equal(project_cuda(x, c, mode="vertex").segment, reference.project_vertex_rule(x, c).segment)


def test_decode_keeps_coordinates_in_float64_cuda():
    c = torch.randn(4096, 8).bfloat16()
    coord = 3000 + torch.linspace(0, 1, 5, dtype=torch.float64)
    got = sfvq_ext.decode(coord.cuda(), c.cuda()).cpu()
    assert torch.equal(got, reference.decode(coord, c).bfloat16())
