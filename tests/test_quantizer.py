"""The SFVQ module: what forward returns in each mode, gradient modes, growth,
usage statistics, state, torch.compile, autocast, DistributedDataParallel, bad input."""

import inspect
import math
import warnings
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import sfvq_ext
from sfvq_ext import quantizer, reference

# The single-process groups below: a store or collective that never answers fails
# the test within a minute instead of waiting out torch's default half hour.
GROUP_TIMEOUT = timedelta(seconds=60)


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
        if m.current_codebook_size == 2**bits:
            return m, x
        m.expand()


M32 = 0xFFFFFFFF


def py_mix32(x: int) -> int:
    """lowbias32 on Python integers: the oracle for the tensor version (which splits
    its products to stay inside int64)."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    return x ^ (x >> 16)


def py_uniform(state, i: int, stream: int, salt: int = 0) -> float:
    _seeded, key_lo, key_hi, step = (int(v) for v in state)
    word = py_mix32((stream & 0xFFFF) | (salt & 0xFFFF) << 16)
    for part in (step >> 32, step & M32, key_hi, key_lo):
        word = py_mix32(word ^ part)
    h = py_mix32(py_mix32((i & M32) ^ word) ^ (i >> 32))
    return (h >> 8) / 2**24


def test_hash_uniform_matches_python_integers_and_is_uniform():
    state = torch.tensor([1, 0xDEADBEEF, 0x12345678, 2**33 + 5])
    u = quantizer.hash_uniform(state, 70000, stream=1)
    assert u.dtype == torch.float32 and u.shape == (70000,)
    for i in (0, 1, 2, 3, 1000, 65535, 69999):
        assert u[i].item() == py_uniform(state, i, 1)
    assert u.min() >= 0 and u.max() < 1
    # 64 bins of 70000 draws: chi-square with 63 degrees of freedom (mean 63, sd 11)
    counts = torch.histc(u, bins=64, min=0, max=1)
    expected = 70000 / 64
    assert ((counts - expected) ** 2 / expected).sum() < 120
    # other stream, salt or step: other numbers
    for other in (quantizer.hash_uniform(state, 100, stream=2), quantizer.hash_uniform(state, 100, 1, salt=1),
                  quantizer.hash_uniform(state + torch.tensor([0, 0, 0, 1]), 100, 1)):
        assert (other != u[:100]).float().mean() > 0.95


def test_train_forward_is_the_dithered_quantizer():
    m = sfvq_ext.SFVQ(5, 4, gradient="none")
    x = torch.randn(3, 40, 5)
    m.initialize(x.reshape(-1, 5))
    m.manual_seed(7)
    state = m.rng_state.clone()
    q, idx, loss, coords = m(x, return_coords=True)
    dither = torch.tensor([py_uniform(state, i, quantizer._DITHER_STREAM) for i in range(m.current_codebook_size - 1)])
    want_q, want_idx = reference.authors_dithered_quantize(x.reshape(-1, 5), m.codebook.detach(), dither)
    assert q.shape == x.shape and idx.shape == (3, 40) and idx.dtype == torch.int64
    assert torch.equal(idx.reshape(-1), want_idx)
    torch.testing.assert_close(q.reshape(-1, 5), want_q)
    torch.testing.assert_close(loss, ((x - q) ** 2).mean())
    # the coordinate of each row's dithered point, and the point back from it
    assert coords.shape == idx.shape and coords.dtype == torch.float32
    torch.testing.assert_close(coords, idx + dither[idx])
    torch.testing.assert_close(reference.decode(coords.double(), m.codebook.detach().double()).float(), q)
    assert m.rng_state[3] == 1  # one step of the stream used


def test_seeded_runs_reproduce_and_seeds_differ():
    x = torch.randn(200, 4)
    runs = []
    for seed in (3, 3, 4):
        m = sfvq_ext.SFVQ(4, 3, gradient="nsvq", start_bits=3)
        m.initialize(x)
        m.generator = torch.Generator().manual_seed(seed)
        runs.append([m(x) for _ in range(3)])
    for a, b in zip(runs[0], runs[1]):
        assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(runs[0][0][0], runs[2][0][0])
    assert not torch.equal(runs[0][0][0], runs[0][1][0])  # each step draws afresh
    assert m.seeded
    m.generator = None
    assert m.generator is None and not m.seeded and m.rng_state.eq(0).all()


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
    assert m.current_codebook_size == 16 and m.current_bits == 4
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
    assert x.grad.abs().sum() > 0 and m.weight.grad[: m.current_codebook_size].abs().sum() > 0


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
    assert m.current_codebook_size == 8
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
    assert m2.current_codebook_size == 16 and m2.initialized
    m.eval(), m2.eval()
    assert torch.equal(m(x)[0], m2(x)[0])


def test_start_bits_and_dtype():
    m = sfvq_ext.SFVQ(3, 5, start_bits=4, dtype=torch.float64)
    m.initialize(torch.randn(50, 3))
    assert m.current_codebook_size == 16 and m.codebook.dtype == torch.float64
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
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1,
                            timeout=GROUP_TIMEOUT)
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
        assert m.current_codebook_size == 8 and torch.isfinite(m.weight).all()
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
    with pytest.raises(ValueError, match=r"SFVQ.initialize: sample must hold at least 4 rows .* got 3"):
        sfvq_ext.SFVQ(4, 3).initialize(torch.randn(3, 4))


@pytest.mark.parametrize("layout", ["last", "first", "fmap"])
def test_a_first_batch_the_curve_cannot_start_from_names_forward_x_and_the_row(layout):
    """The first training batch starts the curve; a batch too small or holding a
    NaN/Inf is reported as forward's x (with the first bad row, counted as forward
    flattens it), not as an argument of a function the user never called, and the
    module stays uninitialised."""
    kwargs = {"last": {}, "first": {"channel_last": False}, "fmap": {"accept_image_fmap": True}}[layout]
    m = sfvq_ext.SFVQ(4, 3, **kwargs)
    rows = torch.randn(6, 4)
    rows[4, 2] = float("inf")
    as_input = {"last": lambda r: r, "first": lambda r: r.T.unsqueeze(0),  # (1, 4, N): row n = position n
                "fmap": lambda r: r.T.reshape(1, 4, r.shape[0], 1)}[layout]
    with pytest.raises(ValueError, match=r"SFVQ.forward: x contains NaN or Inf \(first at row 4 .*initialize"):
        m(as_input(rows))
    with pytest.raises(ValueError, match=r"SFVQ.forward: x must hold at least 4 rows .* got 3 .*initialize"):
        m(as_input(torch.randn(3, 4)))
    with pytest.raises(ValueError, match=r"SFVQ.initialize: sample contains NaN or Inf \(first at row 4 "):
        m.initialize(rows)
    assert not m.initialized and not m.weight.detach().any()
    m(as_input(rows[:4]))  # four finite rows start it
    assert m.initialized


# ---------------------------------------------------------------------------
# Issue 13: one graph under torch.compile, no hidden collective, the state in
# tensors, the reference library's interface.

DATA = Path(__file__).with_name("data")


@pytest.mark.parametrize("seeded", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_compile_is_one_graph(seeded, training):
    m = sfvq_ext.SFVQ(6, 4, gradient="nsvq")
    x = torch.randn(64, 6)
    m.initialize(x)
    if seeded:
        m.generator = torch.Generator().manual_seed(0)
    m.train(training)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(m)(x)
    assert explanation.graph_count == 1 and explanation.graph_break_count == 0, explanation.break_reasons


def test_compiled_seeded_module_equals_eager_bit_for_bit():
    m, x = trained_module()
    m.gradient = "nsvq"
    results = []
    for compiled in (False, True):
        m.manual_seed(11)
        m.reset_usage()
        fn = torch.compile(m, fullgraph=True, backend="aot_eager") if compiled else m
        steps = []
        for _ in range(2):
            m.zero_grad()
            q, idx, loss = fn(x)
            (q.square().sum() + loss).backward()
            steps.append((q.detach(), idx, m.weight.grad.clone()))
        results.append((steps, m.segment_usage.clone(), m.rng_state.clone()))
    (eager, counts_e, rng_e), (comp, counts_c, rng_c) = results
    for a, b in zip(eager, comp):
        assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert torch.equal(counts_e, counts_c) and torch.equal(rng_e, rng_c) and rng_e[3] == 2


COLLECTIVES = ("broadcast", "all_reduce", "all_gather", "all_gather_into_tensor", "reduce", "reduce_scatter",
               "barrier", "broadcast_object_list", "all_gather_object", "scatter", "gather")


@pytest.fixture
def world_of_one(tmp_path, monkeypatch):
    """A gloo process group of one rank, with every collective of torch.distributed recorded."""
    calls = []
    for name in COLLECTIVES:
        original = getattr(dist, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(dist, name, spy)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1,
                            timeout=GROUP_TIMEOUT)
    try:
        yield calls
    finally:
        dist.destroy_process_group()


def exercise(m, x):
    for _ in range(2):
        q, _, loss = m(x)  # the first one initialises from the batch
        (q.sum() + loss).backward()
    m.expand()
    m.initialize(x)
    m.manual_seed(1)
    m(x)
    m.eval()
    m(x)


def test_plain_module_calls_no_collective(world_of_one):
    exercise(sfvq_ext.SFVQ(4, 3), torch.randn(32, 4))
    assert world_of_one == []


def test_sync_codebook_broadcasts_the_start_and_sums_the_counts(world_of_one):
    m = sfvq_ext.SFVQ(4, 3, sync_codebook=True)
    exercise(m, torch.randn(32, 4))
    # lazy start, 2 steps, initialize, 1 seeded step; eval counts nothing
    assert world_of_one == ["broadcast", "all_reduce", "all_reduce", "broadcast", "all_reduce"]


def test_state_dict_is_all_tensors_and_safetensors_round_trips(tmp_path):
    from safetensors.torch import load_model, save_file, save_model

    model = torch.nn.Sequential(torch.nn.Linear(8, 6), sfvq_ext.SFVQ(6, 4))
    model[1].manual_seed(5)
    x = torch.randn(256, 8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(6):
        q, _, loss = model[1](model[0](x))
        opt.zero_grad()
        (q.square().mean() + loss).backward()
        opt.step()
        if step == 2:
            model[1].expand()
    state = model.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert {k for k in state if k.startswith("1.")} == {
        "1.weight", "1.segment_counts", "1.curve_size", "1.curve_initialized", "1.rng_state", "1.stage_steps"}
    save_file(state, tmp_path / "state.safetensors")  # failed on the dict in _extra_state before
    save_model(model, tmp_path / "model.safetensors")
    loaded = torch.nn.Sequential(torch.nn.Linear(8, 6), sfvq_ext.SFVQ(6, 4))
    load_model(loaded, tmp_path / "model.safetensors")
    vq, vq2 = model[1], loaded[1]
    assert vq2.initialized and vq2.current_codebook_size == 8 and vq2.seeded and not sfvq_ext.SFVQ(6, 4).seeded
    for k, v in state.items():
        assert torch.equal(loaded.state_dict()[k], v), k
    # training continues identically: same curve, counts and random stream, no re-initialisation
    a, b = vq(model[0](x)), vq2(loaded[0](x))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert torch.equal(vq.segment_usage, vq2.segment_usage)
    model.eval(), loaded.eval()
    assert torch.equal(model[1](model[0](x))[0], loaded[1](loaded[0](x))[0])


def caught(call):
    """Run call() and return its warnings as (message, filename, line number)."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        call()
    return [(str(w.message), w.filename, w.lineno) for w in seen]


@pytest.mark.parametrize("compiled", [False, True])
def test_warnings_point_at_the_users_line(world_of_one, monkeypatch, compiled):
    """Each warning of the module is reported at the user's line (here, this file),
    past nn.Module's call machinery, a parent module and the compiler's wrappers:
    the rank warning of a first batch without sync_codebook under several ranks,
    and the weight loaded without its curve size."""
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    model = torch.nn.Sequential(torch.nn.Identity(), sfvq_ext.SFVQ(4, 3))
    run = torch.compile(model, backend="aot_eager") if compiled else model
    x = torch.randn(32, 4)
    line = inspect.currentframe().f_lineno + 1
    first = caught(lambda: run(x))
    assert [(f, n) for m, f, n in first if "each rank starts its own curve" in m] == [(__file__, line)], first
    state = {"1.weight": model[1].weight.detach().clone()}
    fresh = torch.nn.Sequential(torch.nn.Identity(), sfvq_ext.SFVQ(4, 3))
    line = inspect.currentframe().f_lineno + 1
    loaded = caught(lambda: fresh.load_state_dict(state, strict=False))
    assert [(f, n) for m, f, n in loaded if "no '1.curve_size'" in m] == [(__file__, line)], loaded


def test_weight_without_size_counts_as_initialised_with_a_warning():
    m, x = trained_module(bits=4)
    weight_only = {"weight": m.state_dict()["weight"]}
    fresh = sfvq_ext.SFVQ(6, 4)
    with pytest.warns(UserWarning, match="current_codebook_size 16"):
        result = fresh.load_state_dict(weight_only, strict=False)
    assert set(result.missing_keys) == {"segment_counts", "curve_size", "curve_initialized", "rng_state"}
    assert fresh.initialized and fresh.current_codebook_size == 16
    before = fresh.weight.detach().clone()
    fresh(x)  # a training batch: no re-initialisation over the loaded curve
    assert torch.equal(fresh.weight.detach(), before)
    # strict loading still refuses the partial state
    with pytest.raises(RuntimeError, match="curve_size"), pytest.warns(UserWarning):
        sfvq_ext.SFVQ(6, 4).load_state_dict(weight_only)
    # an all-zero weight (a module never trained) stays uninitialised, quietly
    empty = sfvq_ext.SFVQ(6, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty.load_state_dict({"weight": torch.zeros(16, 6)}, strict=False)
    assert not empty.initialized


def test_values_marked_uninitialised_are_never_overwritten():
    m = sfvq_ext.SFVQ(4, 3)
    with torch.no_grad():
        m.weight[:4] = torch.randn(4, 4)
    with pytest.raises(RuntimeError, match="holds values"):
        m(torch.randn(16, 4))
    m.set_codebook(m.weight[:4].detach().clone())
    assert m.initialized and m.current_codebook_size == 4
    m(torch.randn(16, 4))
    m.reset_codebook()
    assert not m.initialized and m.weight.abs().sum() == 0 and m.segment_usage.sum() == 0


def test_bad_curve_size_in_a_state_dict():
    m, _ = trained_module(bits=3)
    state = m.state_dict()
    state["curve_size"] = torch.tensor(6)
    with pytest.raises(RuntimeError, match=r"'curve_size' is 6, expected a power of two in \[4, 8\]"):
        sfvq_ext.SFVQ(6, 3).load_state_dict(state)


def test_state_dict_from_before_issue_13_loads():
    """tests/data/legacy_*: written by the code of commit 78519b6 (tests/data/make_legacy.py)."""
    state = torch.load(DATA / "legacy_sfvq_state_dict.pt", weights_only=True)
    assert "_extra_state" in state
    m = sfvq_ext.SFVQ(3, 4, gradient="none")
    m.load_state_dict(state)  # strict
    assert m.initialized and m.current_codebook_size == 8
    torch.testing.assert_close(m.codebook.detach(), state["weight"][:8], rtol=0, atol=0)
    curve = sfvq_ext.load(DATA / "legacy_curve.safetensors")
    assert curve.current_codebook_size == 8 and torch.equal(curve.codebook, m.codebook.detach())
    assert torch.equal(curve.segment_usage, m.segment_usage) and curve.segment_usage.sum() > 0


def _same_codebook(source: sfvq_ext.SFVQ, **kwargs) -> sfvq_ext.SFVQ:
    m = sfvq_ext.SFVQ(source.dim, source.bits, gradient=source.gradient, **kwargs)
    m.set_codebook(source.codebook.detach())
    return m


@pytest.mark.parametrize("layout", ["image", "channel_second"])
def test_image_fmap_and_channel_second_layouts(layout):
    flat, _ = trained_module(dim=6, bits=4)
    if layout == "image":
        m = _same_codebook(flat, accept_image_fmap=True)
        x = torch.randn(2, 6, 3, 5)
    else:
        m = _same_codebook(flat, channel_last=False)
        x = torch.randn(2, 6, 7)
    rows = x.movedim(1, -1)  # (B, ..., D): the oracle's layout
    lead = rows.shape[:-1]
    C = flat.codebook.detach()
    m.eval()
    q, idx, loss, coords = m(x, return_coords=True)
    oracle = reference.project(rows.reshape(-1, 6), C)
    assert q.shape == x.shape and idx.shape == lead and coords.shape == lead
    torch.testing.assert_close(q.movedim(1, -1).reshape(-1, 6).double(), oracle.point, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(coords.reshape(-1).double(), oracle.coord, rtol=0, atol=1e-4)
    torch.testing.assert_close(loss.double(), ((rows.reshape(-1, 6).double() - oracle.point) ** 2).mean())
    # points back from the coordinates, in the module's layout
    torch.testing.assert_close(m.get_output_from_coords(coords), q, rtol=1e-5, atol=1e-5)
    # training: the same rows, the same stream, as a channel-last module
    m.train(), flat.train()
    m.manual_seed(2), flat.manual_seed(2)
    q_t, idx_t, loss_t = m(x)
    q_f, idx_f, loss_f = flat(rows)
    assert torch.equal(idx_t, idx_f) and torch.equal(q_t.movedim(1, -1), q_f) and torch.equal(loss_t, loss_f)


def test_codes_from_indices_are_segment_midpoints():
    flat, _ = trained_module(dim=6, bits=4)
    C = flat.codebook.detach()
    idx = torch.randint(0, 15, (2, 3, 5))
    midpoints = (C[idx] + C[idx + 1]) / 2  # plain indexing: (2, 3, 5, 6)
    torch.testing.assert_close(flat.get_codes_from_indices(idx), midpoints)
    torch.testing.assert_close(flat.get_output_from_indices(idx.int()), midpoints)
    image = _same_codebook(flat, accept_image_fmap=True)
    torch.testing.assert_close(image.get_codes_from_indices(idx), midpoints.permute(0, 3, 1, 2))
    second = _same_codebook(flat, channel_last=False)
    torch.testing.assert_close(second.get_output_from_indices(idx[:, 0]), midpoints[:, 0].permute(0, 2, 1))
    # the midpoint is the mean of the dithered points of that segment: decode(i + 0.5)
    torch.testing.assert_close(flat.get_output_from_coords(idx.float() + 0.5), midpoints, rtol=1e-6, atol=1e-6)


def test_output_from_coords_is_decode():
    flat, _ = trained_module(dim=6, bits=4)
    coords = torch.rand(4, 9) * 17 - 1  # also outside [0, K-1]: clamped
    want = reference.decode(coords.double(), flat.codebook.detach().double())
    torch.testing.assert_close(flat.get_output_from_coords(coords).double(), want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(flat.decode(coords).double(), want, rtol=1e-6, atol=1e-6)


def test_freeze_codebook():
    x = torch.randn(64, 5)
    with pytest.raises(RuntimeError, match="frozen"):
        sfvq_ext.SFVQ(5, 3, freeze_codebook=True)(x)  # nothing to freeze yet
    # a frozen weight (requires_grad off) gets no gradient whatever the call says
    for frozen_by_init, call_flag, frozen in ((True, None, True), (False, True, True), (True, False, True),
                                              (False, None, False), (False, False, False)):
        m = sfvq_ext.SFVQ(5, 3, freeze_codebook=frozen_by_init)
        assert m.freeze_codebook == frozen_by_init and m.weight.requires_grad != frozen_by_init
        m.initialize(x)
        xg = x.clone().requires_grad_()
        q, idx, loss = m(xg, freeze_codebook=call_flag)
        (q.square().sum() + loss).backward()
        assert (m.weight.grad is None) == frozen
        assert xg.grad.abs().sum() > 0  # the input still learns
        assert m.segment_usage.sum() == 64  # usage is still counted
    m.freeze_codebook = False  # unfreezing: as requires_grad_(True)
    m(x)[2].backward()
    assert m.weight.requires_grad and m.weight.grad.abs().sum() > 0
    m.weight.requires_grad_(False)
    assert m.freeze_codebook


def test_interface_bad_input():
    m, _ = trained_module(dim=6, bits=3)
    with pytest.raises(TypeError, match="indices must be an integer tensor"):
        m.get_codes_from_indices(torch.zeros(3))
    with pytest.raises(ValueError, match=r"segment indices in \[0, 6\]"):
        m.get_codes_from_indices(torch.tensor([0, 7]))
    with pytest.raises(TypeError, match="coords must be a floating-point tensor"):
        m.get_output_from_coords(torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="torch.Generator or None"):
        m.generator = 3
    with pytest.raises(ValueError, match=r"shape \(K, 6\) with K a power of two in \[4, 8\]"):
        m.set_codebook(torch.randn(6, 6))
    with pytest.raises(TypeError, match="sync_codebook must be a bool"):
        sfvq_ext.SFVQ(6, 3, sync_codebook="yes")
    with pytest.raises(ValueError, match=r"accept_image_fmap=True, x must be an image feature map \(B, 6, H, W\)"):
        _same_codebook(m, accept_image_fmap=True)(torch.randn(2, 6, 4))
    with pytest.raises(ValueError, match=r"channel_last=False, x must have shape \(B, 6, \.\.\.\)"):
        _same_codebook(m, channel_last=False)(torch.randn(2, 4, 6))
    with pytest.raises(RuntimeError, match="not initialised"):
        sfvq_ext.SFVQ(6, 3).get_output_from_coords(torch.zeros(2))


def test_assigning_the_modules_own_codebook_keeps_it():
    """vq.codebook = vq.codebook (a view of weight) must be a no-op, not a wipe (a new user's report)."""
    vq = sfvq_ext.SFVQ(4, 3)
    vq(torch.randn(64, 4))
    vq.expand()
    before = vq.codebook.detach().clone()
    assert before.abs().sum() > 0
    vq.codebook = vq.codebook
    assert torch.equal(vq.codebook, before)
    vq.set_codebook(vq.codebook.detach())
    assert torch.equal(vq.codebook, before) and vq.current_codebook_size == 8
