"""The SFVQ module: what forward returns in each mode, gradient modes, growth,
usage statistics, state, torch.compile, autocast, DistributedDataParallel, bad input."""

import math

import pytest
import torch
import torch.distributed as dist

import sfvq_ext
from sfvq_ext import reference


def trained_module(dim=6, bits=4, gradient="none", n=512, steps=30):
    m = sfvq_ext.SFVQ(dim, bits, gradient=gradient)
    x = torch.randn(n, dim)
    while True:
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        for _ in range(steps):
            _, _, loss = m(x)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if m.codebook_size == 2**bits:
            return m, x
        m.expand()


def test_train_forward_is_the_dithered_quantizer():
    m = sfvq_ext.SFVQ(5, 4, gradient="none")
    x = torch.randn(3, 40, 5)
    m.initialize(x.reshape(-1, 5))
    m.generator = torch.Generator().manual_seed(7)
    q, idx, loss = m(x)
    dither = torch.rand(m.codebook_size - 1, generator=torch.Generator().manual_seed(7))
    want_q, want_idx = reference.authors_dithered_quantize(x.reshape(-1, 5), m.codebook.detach(), dither)
    assert q.shape == x.shape and idx.shape == (3, 40) and idx.dtype == torch.int64
    assert torch.equal(idx.reshape(-1), want_idx)
    torch.testing.assert_close(q.reshape(-1, 5), want_q)
    torch.testing.assert_close(loss, ((x - q) ** 2).mean())


def test_eval_forward_is_the_exact_projection():
    m, x = trained_module()
    m.eval()
    q, idx, loss = m(x)
    oracle = reference.project(x, m.codebook.detach())
    torch.testing.assert_close(q.double(), oracle.point, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss.double(), ((x.double() - oracle.point) ** 2).mean(), rtol=1e-5, atol=0)
    # at a vertex, segments i (t = 1) and i + 1 (t = 0) tie: compare coordinates there
    torch.testing.assert_close(m.project(x).coord.double(), oracle.coord, rtol=0, atol=1e-4)
    interior = (oracle.t > 1e-3) & (oracle.t < 1 - 1e-3)
    assert torch.equal(idx[interior], oracle.segment[interior]) and interior.sum() > len(x) // 2


def test_training_reduces_loss_and_grows():
    m = sfvq_ext.SFVQ(4, 4, gradient="none")
    x = torch.randn(1024, 4)
    m.initialize(x)
    m.eval()
    before = m(x)[2].item()
    m.train()
    m, _ = trained_module(dim=4, bits=4)
    m.eval()
    assert m.codebook_size == 16 and m.current_bits == 4
    assert m(x)[2].item() < 0.6 * before


def test_straight_through_passes_the_gradient_unchanged():
    m = sfvq_ext.SFVQ(3, 3, gradient="straight_through")
    x = torch.randn(20, 3, requires_grad=True)
    q, _, _ = m(x)
    w = torch.randn(20, 3)
    (q * w).sum().backward()
    torch.testing.assert_close(x.grad, w)
    assert m.weight.grad is None or m.weight.grad.abs().sum() == 0  # the codebook learns from loss only


def test_nsvq_output_carries_the_quantization_error_norm():
    m = sfvq_ext.SFVQ(7, 3, gradient="nsvq")
    x = torch.randn(100, 7, requires_grad=True)
    m.initialize(x.detach())
    m.generator = torch.Generator().manual_seed(3)
    out, _, _ = m(x)
    m.generator = torch.Generator().manual_seed(3)
    m.gradient = "none"
    q, _, _ = m(x)
    torch.testing.assert_close(torch.linalg.vector_norm(out - x, dim=-1), torch.linalg.vector_norm(x - q, dim=-1))
    out.sum().backward()
    assert x.grad.abs().sum() > 0 and m.weight.grad[: m.codebook_size].abs().sum() > 0


def test_nsvq_gradient_is_finite_where_input_equals_its_quantized_point():
    """A curve with a repeated vertex: every dithered point on that zero-length
    segment is the vertex itself, so an input placed there is quantized exactly."""
    m = sfvq_ext.SFVQ(4, 2, gradient="nsvq")
    m.initialize(torch.randn(40, 4))
    with torch.no_grad():
        m.weight[1] = m.weight[2]
    x = m.weight[1].detach().clone()[None].repeat(3, 1).requires_grad_()
    out, idx, _ = m(x)
    assert (idx == 1).all()
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(m.weight.grad).all()
    # the authors' formula, given the same quantized points, returns NaN there
    xa = x.detach().clone().requires_grad_()
    qa = m.codebook.detach()[1].expand(3, 4).clone().requires_grad_()
    reference.authors_noise_substitution(xa, qa, torch.randn(3, 4)).sum().backward()
    assert torch.isnan(xa.grad).any()


def test_expand_keeps_the_curve_and_stops_at_full_size():
    m, x = trained_module(bits=3)
    with pytest.raises(ValueError, match="full size"):
        m.expand()
    m = sfvq_ext.SFVQ(6, 3)
    m.initialize(x)
    before = m.codebook.detach().clone()
    m.expand(eps=0.1)
    assert m.codebook_size == 8
    torch.testing.assert_close(m.codebook.detach(), reference.expand(before, 0.1).float())
    with pytest.raises(RuntimeError, match="not initialised"):
        sfvq_ext.SFVQ(6, 3).expand()


def test_usage_counts_and_perplexity():
    m = sfvq_ext.SFVQ(5, 3, gradient="none", start_bits=3)
    x = torch.randn(300, 5)
    m.initialize(x)
    assert math.isnan(m.perplexity)
    seen = []
    for _ in range(3):
        seen.append(m(x)[1])
    counts = torch.bincount(torch.cat(seen), minlength=7)
    assert torch.equal(m.segment_usage, counts) and m.segment_usage.shape == (7,)
    p = counts.double() / counts.sum()
    p = p[p > 0]
    assert m.perplexity == pytest.approx(math.exp(-(p * p.log()).sum().item()))
    m.eval()
    m(x)
    assert torch.equal(m.segment_usage, counts)  # eval does not count
    m.reset_usage()
    assert m.segment_usage.sum() == 0


def test_state_dict_round_trip_keeps_size():
    m, x = trained_module(bits=4)
    m2 = sfvq_ext.SFVQ(6, 4)
    m2.load_state_dict(m.state_dict())
    assert m2.codebook_size == 16 and m2.initialized
    m.eval(), m2.eval()
    assert torch.equal(m(x)[0], m2(x)[0])


def test_start_bits_and_dtype():
    m = sfvq_ext.SFVQ(3, 5, start_bits=4, dtype=torch.float64)
    m.initialize(torch.randn(50, 3))
    assert m.codebook_size == 16 and m.codebook.dtype == torch.float64
    q, _, _ = m(torch.randn(10, 3, dtype=torch.float32))
    assert q.dtype == torch.float32


def test_torch_compile_matches_eager():
    m, x = trained_module()
    m.gradient = "nsvq"
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    m.eval()
    for a, b in zip(compiled(x), m(x)):
        assert torch.equal(a, b)
    m.train()
    results = []
    for fn in (m, compiled):
        m.zero_grad()
        torch.manual_seed(5)
        q, idx, loss = fn(x)
        (q.sum() + loss).backward()
        results.append((q.detach(), idx, m.weight.grad.clone()))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


def test_torch_compile_initialises_on_first_batch():
    m = sfvq_ext.SFVQ(4, 3)
    compiled = torch.compile(m, backend="aot_eager")  # initialisation runs eagerly (graph break)
    q, _, loss = compiled(torch.randn(64, 4))
    assert m.initialized and torch.isfinite(loss) and q.shape == (64, 4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast(dtype):
    model = torch.nn.Sequential(torch.nn.Linear(8, 6))
    m = sfvq_ext.SFVQ(6, 3)
    x = torch.randn(32, 8)
    with torch.autocast("cpu", dtype=dtype):
        h = model(x)
        assert h.dtype == dtype
        q, idx, loss = m(h)
        out = (q.float() ** 2).mean() + loss
    assert q.dtype == dtype and loss.dtype == torch.float32 and m.codebook.dtype == torch.float32
    out.backward()
    assert torch.isfinite(m.weight.grad).all() and torch.isfinite(model[0].weight.grad).all()
    assert model[0].weight.grad.abs().sum() > 0


def test_distributed_data_parallel_single_process(tmp_path):
    """DDP wrapping, lazy initialisation and expansion under a real process group
    (world size 1 here; the 2-process run is in test_distributed.py)."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        m = sfvq_ext.SFVQ(5, 3)
        ddp = torch.nn.parallel.DistributedDataParallel(m)
        x = torch.randn(128, 5)
        opt = torch.optim.Adam(ddp.parameters(), lr=1e-2)
        for step in range(12):
            q, _, loss = ddp(x)
            opt.zero_grad()
            (loss + q.mean()).backward()
            opt.step()
            if step == 5:
                m.expand()
        assert m.codebook_size == 8 and torch.isfinite(m.weight).all()
    finally:
        dist.destroy_process_group()


def test_bad_input():
    with pytest.raises(ValueError, match="bits"):
        sfvq_ext.SFVQ(4, 1)
    with pytest.raises(ValueError, match="dim"):
        sfvq_ext.SFVQ(0, 3)
    with pytest.raises(ValueError, match="gradient"):
        sfvq_ext.SFVQ(4, 3, gradient="ste")
    with pytest.raises(ValueError, match="start_bits"):
        sfvq_ext.SFVQ(4, 3, start_bits=4)
    m = sfvq_ext.SFVQ(4, 3)
    with pytest.raises(RuntimeError, match="not initialised"):
        m.eval()(torch.randn(2, 4))
    m.train()
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 4\)"):
        m(torch.randn(8, 5))
    with pytest.raises(TypeError, match="floating-point"):
        m(torch.ones(8, 4, dtype=torch.int64))
    m.initialize(torch.randn(8, 4))
    with pytest.raises(ValueError, match="NaN"):
        m(torch.full((3, 4), float("nan")))
    with pytest.raises(ValueError, match="n >= 4"):
        sfvq_ext.SFVQ(4, 3).initialize(torch.randn(3, 4))
