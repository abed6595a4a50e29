"""SFVQ inside training stacks, each checked against an oracle: the same computation
without the mechanism under test.

* DistributedDataParallel on 2 gloo processes (CPU), each rank its own data, against
  two replicas trained in this process whose gradients are averaged by hand as DDP
  averages them (each rank's gradient / 2, summed): plain runs (seeded and global-RNG
  modules, with and without ``sync_codebook``), the global usage counts, a frozen
  codebook (no ``find_unused_parameters``) then unfrozen, automatic growth;
* FSDP2 (``fully_shard``) on the same 2 processes, against the same oracle;
* a seeded module sent to a ``torch.multiprocessing.spawn`` child, against the
  parent's own next forward.

The distributed runs are tests/stack_worker.py: one worker run per suite (one process
group, several training runs), started once per module; each rank saves what it saw
and the assertions are made here. Every wait is bounded: the gloo collectives time out
after 60 s, a worker run is killed after SUITE_TIMEOUT_S, the spawn child after
SPAWN_TIMEOUT_S; a hang fails the tests instead of blocking.

The oracle's replica r must draw the NSVQ noise rank r draws (the noise is salted with
the rank): while it runs, ``sfvq_ext.quantizer`` sees a stand-in for torch.distributed
that says "rank r of 2" and fails on any collective. The oracle's modules count their
own rows (``sync_codebook`` off) and replica 1 takes replica 0's starting curve, as
``sync_codebook``'s broadcast gives it.

Under FSDP2 the curve must be set before sharding, with grow_every=None: FSDP2 drops
writes made to a gathered parameter inside forward, so a curve started or grown there is
lost. That known limit is a strict xfail here (it turns into a failure once fixed).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import pickle
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from sfvq_ext import quantizer

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the spawn child imports stack_worker by name (it inherits sys.path)
    sys.path.insert(0, str(HERE))
import stack_worker as sw  # noqa: E402

WORKER = HERE / "stack_worker.py"
SUITE_TIMEOUT_S = 180  # one worker run (2 processes); 7-14 s on 2 cores
SPAWN_TIMEOUT_S = 90

# Float32 rounding over a few optimizer steps. DDP sums each rank's gradient / 2 and the
# oracle does the same sum, so on one machine the two usually agree bit for bit; the
# bound allows a different reduction order (a few ulps through Adam's normalisation).
RTOL, ATOL = 1e-5, 1e-6


# -- the worker runs ---------------------------------------------------------------------

class SuiteRun:
    """One worker run of a suite: each rank's saved records, or why there are none."""

    def __init__(self, suite: str, directory: Path):
        self.suite, self.dir = suite, directory
        self.failure: str | None = None
        self.ranks: list[dict] = []
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        procs, logs = [], []
        start = time.monotonic()
        for rank in range(2):
            log = open(directory / f"rank{rank}.log", "w")
            logs.append(log)
            procs.append(subprocess.Popen([sys.executable, str(WORKER), suite, str(rank), "2",
                                           str(directory / "store"), str(directory)],
                                          stdout=log, stderr=subprocess.STDOUT, env=env))
        try:
            for p in procs:
                p.wait(timeout=max(1.0, start + SUITE_TIMEOUT_S - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.failure = f"the {suite} worker run did not finish within {SUITE_TIMEOUT_S} s (killed)"
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            for log in logs:
                log.close()
        self.seconds = time.monotonic() - start
        self.codes = [p.returncode for p in procs]
        for rank in range(2):
            saved = directory / f"{suite}-rank{rank}.pt"
            if saved.exists():
                self.ranks.append(torch.load(saved, weights_only=False))
        if self.failure is None and len(self.ranks) < 2:
            self.failure = f"the {suite} worker run saved no results (exit codes {self.codes})"

    def logs(self) -> str:
        return "\n".join(f"--- rank {r} log (last 3000 chars) ---\n" + (self.dir / f"rank{r}.log").read_text()[-3000:]
                         for r in range(2))

    def error(self, name: str) -> str | None:
        """The traceback of run ``name`` on either rank, or why it never ran; None if it ran on both."""
        if self.failure:
            return self.failure
        for rank, saved in enumerate(self.ranks):
            if name in saved["errors"]:
                return f"rank {rank}: {saved['errors'][name]}"
            if name not in saved:
                return (f"rank {rank}: run {name!r} has no record (runs that raised: {sorted(saved['errors'])}; "
                        f"exit codes {self.codes})")
        return None

    def records(self, name: str) -> tuple[dict, dict]:
        error = self.error(name)
        if error:
            pytest.fail(f"{self.suite} run {name!r} failed:\n{error}\n{self.logs()}")
        return self.ranks[0][name], self.ranks[1][name]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> SuiteRun:
    return SuiteRun("ddp", tmp_path_factory.mktemp("ddp"))


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory) -> SuiteRun:
    return SuiteRun("fsdp", tmp_path_factory.mktemp("fsdp"))


# -- the oracle: two replicas in this process, gradients averaged by hand -----------------

class _RankStandIn:
    """What sfvq_ext.quantizer sees as torch.distributed while oracle replica ``rank`` runs."""

    def __init__(self, rank: int):
        self.rank = rank

    def is_available(self):
        return True

    def is_initialized(self):
        return True

    def get_rank(self):
        return self.rank

    def get_world_size(self):
        return 2

    def __getattr__(self, name):
        raise AssertionError(f"the single-process oracle's SFVQ called torch.distributed.{name}")


@contextlib.contextmanager
def as_rank(rank: int):
    saved = quantizer.dist
    quantizer.dist = _RankStandIn(rank)
    try:
        yield
    finally:
        quantizer.dist = saved


@contextlib.contextmanager
def one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@functools.cache
def oracle(name: str) -> tuple[dict, dict]:
    """Replica r sees rank r's data (and noise); after each backward both replicas' gradients
    become ``g0 / 2 + g1 / 2`` (DDP's average) and each takes its optimizer step. For
    "frozen": ``steps`` steps frozen, then unfrozen for ``steps_unfrozen`` more."""
    cfg = sw.CONFIGS[name]
    reps = [sw.make_model(name) for _ in range(2)]
    for rep in reps:
        rep.vq.sync_codebook = False  # the oracle sums the counts itself; no collective
    opts = [sw.make_optimizer(name, rep) for rep in reps]
    records = [dict(steps=[], start_codebook=rep.vq.weight.detach().clone()) for rep in reps]

    def train(step: int) -> None:
        outputs = []
        for r, rep in enumerate(reps):
            x, y = sw.batch(name, step, r)
            sw.before_forward(name, step)
            if r == 1 and not rep.vq.initialized:  # sync_codebook's broadcast: rank 0's starting curve
                rep.vq.set_codebook(reps[0].vq.codebook.detach())
            with as_rank(r), warnings.catch_warnings():
                # "each rank starts its own curve": replica 0 is rank 0, and replica 1 takes its curve
                warnings.filterwarnings("ignore", "SFVQ: initialising from this rank's batch")
                loss, indices = sw.loss_of(rep, x, y)
            opts[r].zero_grad(set_to_none=True)
            loss.backward()
            outputs.append((loss, indices))
        for p0, p1 in zip(reps[0].parameters(), reps[1].parameters()):
            assert (p0.grad is None) == (p1.grad is None)
            if p0.grad is not None:
                mean = p0.grad / 2 + p1.grad / 2
                p0.grad, p1.grad = mean, mean.clone()
        for r, (opt, rep) in enumerate(zip(opts, reps)):
            opt.step()
            records[r]["steps"].append(sw.snapshot(rep.vq, *outputs[r]))  # after the step, as the workers

    with one_thread():
        for step in range(cfg["steps"]):
            train(step)
        for r, rep in enumerate(reps):
            records[r]["params"] = sw.params_of(rep)
            records[r]["adam_steps"] = sw.adam_steps(rep, opts[r])
        if name == "frozen":
            for rep in reps:
                rep.vq.freeze_codebook = False
            for step in range(cfg["steps"], cfg["steps"] + cfg["steps_unfrozen"]):
                train(step)
            for r, rep in enumerate(reps):
                records[r]["params_unfrozen"] = sw.params_of(rep)
    for key in ("params",) + (("params_unfrozen",) if name == "frozen" else ()):
        for n, p in records[0][key].items():  # the replicas stay one model
            assert torch.equal(p, records[1][key][n]), f"oracle replicas diverged in {n}"
    return records[0], records[1]


# -- comparisons ---------------------------------------------------------------------------

def assert_params_match_oracle(got: dict, want: dict, what: str) -> float:
    """Every parameter within float32 rounding of the oracle's; returns the largest difference."""
    assert got.keys() == want.keys(), what
    worst = 0.0
    for n, w in want.items():
        torch.testing.assert_close(got[n], w, rtol=RTOL, atol=ATOL, msg=lambda m, n=n: f"{what}: {n}: {m}")
        worst = max(worst, (got[n] - w).abs().max().item())
    return worst


def assert_steps_match_oracle(ranks: tuple[dict, dict], want: tuple[dict, dict], what: str) -> None:
    """Per step and rank: the same segments chosen, the same size, the loss within rounding."""
    for r in range(2):
        assert len(ranks[r]["steps"]) == len(want[r]["steps"]), what
        for s, (got, ref) in enumerate(zip(ranks[r]["steps"], want[r]["steps"])):
            where = f"{what}, rank {r}, step {s}"
            assert got["size"] == ref["size"], f"{where}: size {got['size']} != oracle's {ref['size']}"
            assert torch.equal(got["indices"], ref["indices"]), f"{where}: other segments than the oracle's"
            torch.testing.assert_close(got["loss"], ref["loss"], rtol=RTOL, atol=ATOL,
                                       msg=lambda m, w=where: f"{w}: loss: {m}")
            assert torch.equal(got["rng_state"], ref["rng_state"]), f"{where}: rng_state"


def assert_ranks_identical(ranks: tuple[dict, dict], key: str, what: str) -> None:
    for n, p in ranks[0][key].items():
        assert torch.equal(p, ranks[1][key][n]), f"{what}: {n} differs between the ranks"


# -- 1. DDP, plain -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["seeded_nsvq_sync", "seeded_st_nosync", "global_rng_st_sync"])
def test_ddp_training_equals_the_single_process_oracle(ddp_run, name):
    """Linear -> SFVQ -> Linear under DDP, 4 steps, different rows per rank: the ranks end
    identical, and every step (segments, loss, stream) and the final parameters match two
    replicas trained here with the gradients averaged as DDP averages them.
    seeded_nsvq_sync: manual_seed, NSVQ noise (salted by rank), sync_codebook, the curve
    started from rank 0's first batch, Adam; seeded_st_nosync: manual_seed,
    straight-through, no sync, a preset curve, SGD+momentum; global_rng_st_sync: the
    global RNG (seeded per step alike on every rank), straight-through, sync, lazy start."""
    ranks = ddp_run.records(name)
    want = oracle(name)
    assert_ranks_identical(ranks, "params", name)
    assert_steps_match_oracle(ranks, want, name)
    assert_params_match_oracle(ranks[0]["params"], want[0]["params"], name)
    first = ranks[0]["steps"][0]["codebook"]
    assert not torch.equal(ranks[0]["params"]["vq.weight"][: len(first)], first), "the codebook did not train"


# -- 2. DDP, global usage counts --------------------------------------------------------------

@pytest.mark.parametrize("name", ["seeded_nsvq_sync", "global_rng_st_sync"])
def test_ddp_synced_usage_is_the_bincount_of_every_ranks_indices(ddp_run, name):
    """sync_codebook=True: after every step segment_usage is the same on both ranks and
    equals the bincount of both ranks' indices of all steps so far (and the sum of the
    oracle replicas' own counts)."""
    ranks = ddp_run.records(name)
    want = oracle(name)
    for s in range(len(ranks[0]["steps"])):
        K = ranks[0]["steps"][s]["size"]
        seen = torch.cat([ranks[r]["steps"][t]["indices"].reshape(-1) for r in range(2) for t in range(s + 1)])
        expected = torch.bincount(seen, minlength=K - 1)
        for r in range(2):
            got = ranks[r]["steps"][s]["usage"]
            assert torch.equal(got, expected), f"step {s}, rank {r}: usage {got.tolist()} != {expected.tolist()}"
        assert torch.equal(expected, want[0]["steps"][s]["usage"] + want[1]["steps"][s]["usage"])
    assert int(ranks[0]["steps"][-1]["usage"].sum()) == 2 * len(ranks[0]["steps"]) * sw.ROWS


def test_ddp_unsynced_usage_counts_each_ranks_own_rows(ddp_run):
    """sync_codebook=False issues no all_reduce: rank 0 counts only its own rows. Rank 1's
    counts are rank 0's, copied by DDP's broadcast_buffers before each forward, plus its
    own rows of that step (the class docstring's note)."""
    ranks = ddp_run.records("seeded_st_nosync")
    for s in range(len(ranks[0]["steps"])):
        K = ranks[0]["steps"][s]["size"]
        own0 = torch.cat([ranks[0]["steps"][t]["indices"].reshape(-1) for t in range(s + 1)])
        assert torch.equal(ranks[0]["steps"][s]["usage"], torch.bincount(own0, minlength=K - 1)), f"step {s}"
        before = torch.bincount(own0[: s * sw.ROWS], minlength=K - 1)
        now1 = torch.bincount(ranks[1]["steps"][s]["indices"].reshape(-1), minlength=K - 1)
        assert torch.equal(ranks[1]["steps"][s]["usage"], before + now1), f"step {s}"


# -- 3. DDP, frozen codebook ----------------------------------------------------------------------

def test_ddp_frozen_codebook_then_unfrozen(ddp_run):
    """freeze_codebook=True under DDP without find_unused_parameters: 3 steps run (before
    the fix, step 2 raised "Expected to have finished reduction in the prior iteration"),
    the codebook stays bit for bit and gets no gradient, the Linear layers train as in
    the (frozen) oracle. Then vq.freeze_codebook = False and a fresh DDP: 2 more steps,
    the codebook gets a gradient and moves, everything still as in the oracle."""
    error = ddp_run.error("frozen")
    if error and "Expected to have finished reduction" in error:
        pytest.fail(f"DDP with a frozen codebook needs find_unused_parameters again:\n{error}")
    ranks = ddp_run.records("frozen")
    want = oracle("frozen")
    cfg = sw.CONFIGS["frozen"]
    assert len(ranks[0]["steps"]) == cfg["steps"] + cfg["steps_unfrozen"]
    for r in range(2):
        assert ranks[r]["frozen_grad_is_none"]
        assert torch.equal(ranks[r]["params"]["vq.weight"], ranks[r]["start_codebook"]), "a frozen codebook moved"
    assert_ranks_identical(ranks, "params", "frozen")
    assert_params_match_oracle(ranks[0]["params"], want[0]["params"], "frozen phase")
    for n in ("enc.weight", "dec.weight"):
        assert not torch.equal(ranks[0]["params"][n], sw.make_model("frozen").state_dict()[n]), f"{n} did not train"
    # unfrozen, under a fresh DDP
    assert_steps_match_oracle(ranks, want, "frozen then unfrozen")
    grad = ranks[0]["unfrozen_grad"]
    assert grad is not None and grad.abs().sum() > 0, "the unfrozen codebook got no gradient"
    assert_ranks_identical(ranks, "params_unfrozen", "unfrozen")
    assert not torch.equal(ranks[0]["params_unfrozen"]["vq.weight"], ranks[0]["start_codebook"])
    assert_params_match_oracle(ranks[0]["params_unfrozen"], want[0]["params_unfrozen"], "unfrozen phase")


# -- 4. DDP, automatic growth ----------------------------------------------------------------------

def growth_schedule(start: int, full: int, every: int, steps: int) -> list[int]:
    """The size after each training step: the first step starts the curve at ``start``;
    a step that begins with ``every`` steps done at the current size doubles it first."""
    sizes, size, done = [], start, 0
    for _ in range(steps):
        if done >= every and size < full:
            size, done = 2 * size, 0
        done += 1
        sizes.append(size)
    return sizes


def test_ddp_automatic_growth_in_step_on_both_ranks(ddp_run):
    """grow_every=2, bits=4, 7 steps: after every step both ranks have the same size and
    the same codebook bit for bit; the sizes are the schedule's (4 4 8 8 16 16 16: it
    stops at 2**bits), and every step matches the oracle."""
    ranks = ddp_run.records("grow")
    cfg = sw.CONFIGS["grow"]
    expected = growth_schedule(4, 2 ** cfg["vq"]["bits"], cfg["vq"]["grow_every"], cfg["steps"])
    assert expected == [4, 4, 8, 8, 16, 16, 16]
    for s in range(cfg["steps"]):
        a, b = ranks[0]["steps"][s], ranks[1]["steps"][s]
        assert a["size"] == b["size"] == expected[s], f"step {s}: sizes {a['size']}, {b['size']}, schedule {expected[s]}"
        assert torch.equal(a["codebook"], b["codebook"]), f"step {s}: the ranks' codebooks differ"
    assert_steps_match_oracle(ranks, oracle("grow"), "grow")
    assert_params_match_oracle(ranks[0]["params"], oracle("grow")[0]["params"], "grow")


def test_ddp_growth_with_an_expand_hook_resetting_adam(ddp_run):
    """The growth run again with the expand hook of SFVQ's docstring (the codebook's
    Adam state dropped at each doubling) on both ranks: the ranks stay identical, every
    step matches the oracle replicas (the same hook), the codebook's Adam state counts
    only the 3 steps since the last doubling (every other parameter all 7), and the run
    differs from the one without the hook."""
    ranks = ddp_run.records("grow_reset")
    want = oracle("grow_reset")
    assert_ranks_identical(ranks, "params", "grow_reset")
    assert_steps_match_oracle(ranks, want, "grow_reset")
    assert_params_match_oracle(ranks[0]["params"], want[0]["params"], "grow_reset")
    steps = sw.CONFIGS["grow_reset"]["steps"]
    for record in (*ranks, *want):
        assert record["adam_steps"] == {"enc.weight": steps, "enc.bias": steps, "vq.weight": 3,
                                        "dec.weight": steps, "dec.bias": steps}
    assert ddp_run.records("grow")[0]["adam_steps"]["vq.weight"] == steps
    assert not torch.equal(ranks[0]["params"]["vq.weight"], ddp_run.records("grow")[0]["params"]["vq.weight"])


# -- 5. FSDP2 ----------------------------------------------------------------------------------------

_CPU_GLOO_LIMITATION = re.compile(r"(gloo|cpu).{0,80}(not (supported|implemented)|unsupported|does not support)|"
                                  r"(not (supported|implemented)|unsupported|does not support).{0,80}(gloo|cpu)",
                                  re.IGNORECASE)


def test_fsdp2_training_equals_the_single_process_oracle(fsdp_run):
    """fully_shard(Linear -> SFVQ -> Linear) on 2 gloo CPU processes (this torch runs it),
    the curve set before sharding, no growth, 4 Adam steps: the weight really is a
    sharded DTensor, the ranks agree, and every step and the final parameters match the
    DDP oracle (FSDP2 also averages the gradients). On a torch whose FSDP2 cannot run
    on CPU/gloo this skips, quoting the error."""
    error = fsdp_run.error("fsdp")
    if error and (_CPU_GLOO_LIMITATION.search(error) or "cannot import name 'fully_shard'" in error):
        pytest.skip("this torch's FSDP2 does not run on CPU/gloo: " + error.strip().splitlines()[-1])
    ranks = fsdp_run.records("fsdp")
    assert ranks[0]["weight_type"] == "DTensor"
    want = oracle("fsdp")
    assert_ranks_identical(ranks, "params", "fsdp")
    assert_steps_match_oracle(ranks, want, "fsdp")
    for s in range(len(ranks[0]["steps"])):
        torch.testing.assert_close(ranks[0]["steps"][s]["codebook"], want[0]["steps"][s]["codebook"],
                                   rtol=RTOL, atol=ATOL)
    assert_params_match_oracle(ranks[0]["params"], want[0]["params"], "fsdp")


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "known limit (docs/quantizer.md): under FSDP2 the curve started from the first batch and every automatic growth are "
    "written into the gathered weight inside forward; FSDP2 reshards without copying them back, so the sharded "
    "weight keeps the old curve. Set the curve before fully_shard and pass grow_every=None"))
def test_fsdp2_lazy_start_and_growth_equal_the_oracle(fsdp_run):
    """fully_shard with the curve started by the first training batch and grow_every=2:
    the codebook after every step is the oracle's."""
    ranks = fsdp_run.records("fsdp_grow")
    want = oracle("fsdp_grow")
    for s in range(len(ranks[0]["steps"])):
        got, ref = ranks[0]["steps"][s], want[0]["steps"][s]
        assert got["size"] == ref["size"]
        torch.testing.assert_close(got["codebook"], ref["codebook"], rtol=RTOL, atol=ATOL,
                                   msg=lambda m, s=s: f"step {s}: the sharded codebook is not the oracle's: {m}")


# -- 6. a seeded module in a torch.multiprocessing spawn child -----------------------------------------

def run_spawn_child(payload, x: torch.Tensor, out: Path) -> dict:
    ctx = mp.start_processes(sw.spawn_child, args=(payload, x, str(out)), nprocs=1, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + SPAWN_TIMEOUT_S
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail(f"the spawn child did not finish within {SPAWN_TIMEOUT_S} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
                p.join()
    return torch.load(out, weights_only=False)


def seeded_trained_module() -> tuple[quantizer.SFVQ, torch.Tensor]:
    vq = quantizer.SFVQ(sw.DIM, 3, grow_every=None).manual_seed(21)
    x = torch.randn(32, sw.DIM, generator=torch.Generator().manual_seed(4))
    with one_thread():
        for _ in range(2):  # started, and the stream two steps on
            vq(x)
    return vq, x


def assert_child_forward_equals(child: dict, vq: quantizer.SFVQ, x: torch.Tensor) -> None:
    """The child's training forward is bit for bit ``vq``'s next one; the stream advanced alike."""
    before = vq.rng_state.clone()
    with one_thread():
        q, indices, loss = vq(x)
    assert child["seeded"] and child["training"]
    assert torch.equal(child["before"], before)
    assert torch.equal(child["q"], q.detach()), "quantized differs from the parent's next forward"
    assert torch.equal(child["indices"], indices)
    assert torch.equal(child["loss"], loss.detach())
    assert torch.equal(child["after"], vq.rng_state), f"{child['after'].tolist()} vs {vq.rng_state.tolist()}"
    assert int(child["after"][3]) == int(before[3]) + 1


def test_seeded_module_pickled_to_a_spawn_child(tmp_path):
    """pickle.dumps of a seeded, started module, sent to a spawn child: the child's training
    forward gives what the parent's own next forward gives, bit for bit, with rng_state
    advanced identically; the parent's module is untouched by the child (a private copy)."""
    vq, x = seeded_trained_module()
    state = {k: v.clone() for k, v in vq.state_dict().items()}
    child = run_spawn_child(pickle.dumps(vq), x, tmp_path / "child.pt")
    assert not child["shared"]
    for k, v in vq.state_dict().items():
        assert torch.equal(v, state[k]), f"the child changed the parent's {k}"
    assert_child_forward_equals(child, vq, x)


def test_seeded_module_as_a_spawn_argument(tmp_path):
    """The seeded module itself as a spawn argument (torch's pickler: its tensors in shared
    memory): the child's training forward equals the forward of a copy taken before the
    spawn, bit for bit, and, its buffers being shared, the parent's stream is where the
    child left it."""
    vq, x = seeded_trained_module()
    snapshot = copy.deepcopy(vq)
    child = run_spawn_child(vq, x, tmp_path / "child.pt")
    assert child["shared"]
    assert_child_forward_equals(child, snapshot, x)
    assert torch.equal(vq.rng_state, snapshot.rng_state)
