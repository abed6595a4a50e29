"""SFVQ inside training stacks: the code shared by tests/test_training_stack_distributed.py
(the single-process oracles import the model, data and loss from here) and the worker
processes it starts (not collected by pytest).

    python tests/stack_worker.py SUITE RANK WORLD_SIZE STORE_FILE OUT_DIR

SUITE is ``ddp`` (DistributedDataParallel: plain runs, a frozen codebook, automatic
growth) or ``fsdp`` (FSDP2 ``fully_shard``). Each rank runs every check of the suite
in one gloo process group (started from a FileStore, short timeout) and saves what it
saw to OUT_DIR/SUITE-rank{RANK}.pt after every run: the per-step losses, indices, sizes
and codebooks and the final parameters. The assertions against the oracles are made by the test
module. A check that raises is recorded (its traceback under "errors") and ends the
suite on that rank, so the other rank fails its next collective within the timeout
instead of hanging; a watchdog ends a stuck worker in any case.
"""

from __future__ import annotations

import faulthandler
import gc
import os
import pickle
import sys
import traceback
import zlib
from datetime import timedelta

import torch
import torch.nn.functional as F
from torch import nn

import sfvq_ext

TIMEOUT = timedelta(seconds=60)  # of each collective (and the start): a missing peer fails, never hangs
WATCHDOG_S = 240  # the whole worker run

IN, DIM, OUT, ROWS = 6, 4, 3, 16

# Each run: the SFVQ keywords, its own stream's seed (None: torch's global RNG, seeded
# per step identically on every rank), how the curve starts ("lazy": from rank 0's first
# batch, broadcast by sync_codebook; "preset": set_codebook before wrapping), the
# optimizer and the steps. "frozen" trains `steps` steps frozen, then `steps_unfrozen`.
CONFIGS = {
    # check 1 + 2: DDP against the single-process oracle; synced usage counts
    "seeded_nsvq_sync": dict(vq=dict(bits=3, gradient="nsvq", sync_codebook=True, grow_every=None),
                             seed=7, init="lazy", opt="adam", steps=4),
    "seeded_st_nosync": dict(vq=dict(bits=3, gradient="straight_through", sync_codebook=False, grow_every=None),
                             seed=11, init="preset", opt="sgd", steps=4),
    "global_rng_st_sync": dict(vq=dict(bits=3, gradient="straight_through", sync_codebook=True, grow_every=None),
                               seed=None, init="lazy", opt="sgd", steps=4),
    # check 3: a frozen codebook, no find_unused_parameters; then unfrozen under a fresh DDP
    "frozen": dict(vq=dict(bits=3, gradient="nsvq", sync_codebook=True, grow_every=None, freeze_codebook=True),
                   seed=3, init="preset", opt="sgd", steps=3, steps_unfrozen=2),
    # check 4: automatic growth every 2 steps, 4 -> 8 -> 16 (full) in 7 steps
    "grow": dict(vq=dict(bits=4, gradient="nsvq", sync_codebook=True, grow_every=2),
                 seed=5, init="lazy", opt="adam", steps=7),
    # check 4b: the same growth with an expand hook that starts the codebook's Adam state afresh
    "grow_reset": dict(vq=dict(bits=4, gradient="nsvq", sync_codebook=True, grow_every=2),
                       seed=5, init="lazy", opt="adam", steps=7, reset_adam_on_expand=True),
    # check 5: FSDP2, the curve set before sharding, no growth
    "fsdp": dict(vq=dict(bits=3, gradient="nsvq", sync_codebook=True, grow_every=None),
                 seed=9, init="preset", opt="adam", steps=4),
    # FSDP2 with the curve started by the first batch and grown inside forward
    "fsdp_grow": dict(vq=dict(bits=4, gradient="nsvq", sync_codebook=True, grow_every=2),
                      seed=13, init="lazy", opt="adam", steps=5),
}
DDP_RUNS = ("seeded_nsvq_sync", "seeded_st_nosync", "global_rng_st_sync", "frozen", "grow", "grow_reset")
FSDP_RUNS = ("fsdp", "fsdp_grow")


class Net(nn.Module):
    """Linear -> SFVQ -> Linear; forward gives (output, indices, vq loss)."""

    def __init__(self, vq: sfvq_ext.SFVQ):
        super().__init__()
        self.enc = nn.Linear(IN, DIM)
        self.vq = vq
        self.dec = nn.Linear(DIM, OUT)

    def forward(self, x):
        q, indices, vq_loss = self.vq(self.enc(x))
        return self.dec(q), indices, vq_loss


def _seed(*parts) -> int:
    return zlib.crc32(repr(parts).encode())


def preset_codebook(name: str, bits: int) -> torch.Tensor:
    return torch.randn(2**bits, DIM, generator=torch.Generator().manual_seed(_seed("codebook", name)))


def make_model(name: str) -> Net:
    """The same starting model in every process (DDP would broadcast rank 0's anyway)."""
    cfg = CONFIGS[name]
    g = torch.Generator().manual_seed(_seed("model", name))
    vq = sfvq_ext.SFVQ(DIM, **cfg["vq"])
    model = Net(vq)
    with torch.no_grad():
        for layer in (model.enc, model.dec):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.5)
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=g) * 0.1)
    if cfg["seed"] is not None:
        vq.manual_seed(cfg["seed"])
    if cfg["init"] == "preset":
        vq.set_codebook(preset_codebook(name, cfg["vq"]["bits"]))
    return model


def make_optimizer(name: str, model: Net) -> torch.optim.Optimizer:
    # every parameter, the frozen codebook included (an optimizer skips a None grad)
    if CONFIGS[name]["opt"] == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=5e-2, momentum=0.9)
    if CONFIGS[name].get("reset_adam_on_expand"):  # the recipe in SFVQ's docstring
        model.vq.register_expand_hook(lambda vq: optimizer.state.pop(vq.weight, None))
    return optimizer


def adam_steps(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Per parameter, the steps Adam's state for it has counted (empty for another optimizer)."""
    if not isinstance(optimizer, torch.optim.Adam):
        return {}
    return {n: int(optimizer.state[p]["step"]) for n, p in model.named_parameters() if p in optimizer.state}


def batch(name: str, step: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each rank its own rows (rank 1's shifted, so the ranks' data differ in kind too)."""
    g = torch.Generator().manual_seed(_seed("batch", name, step, rank))
    x = torch.randn(ROWS, IN, generator=g) + 0.5 * rank
    return x, torch.randn(ROWS, OUT, generator=g)


def before_forward(name: str, step: int) -> None:
    """An unseeded module draws from the global RNG: the same seed on every rank and in
    the oracle's replicas, so the dither is the same draw everywhere."""
    if CONFIGS[name]["seed"] is None:
        torch.manual_seed(_seed("global", name, step))


def loss_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    out, indices, vq_loss = model(x)
    return F.mse_loss(out, y) + 0.25 * vq_loss, indices


def plain(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's full value (a collective: every rank calls it in the same order), else a copy."""
    full = getattr(t, "full_tensor", None)
    return (full() if full is not None else t).detach().clone()


def snapshot(vq: sfvq_ext.SFVQ, loss: torch.Tensor, indices: torch.Tensor) -> dict:
    size = vq.current_codebook_size
    return dict(loss=loss.detach().clone(), indices=indices.clone(), size=size,
                codebook=plain(vq.weight)[:size], usage=vq.segment_usage.clone(), rng_state=vq.rng_state.clone())


def train_step(name: str, step: int, rank: int, model: Net, wrapped: nn.Module, opt) -> dict:
    """One training step of run ``name`` on ``rank``: its batch through ``wrapped`` (the
    DDP or FSDP2 model around ``model``), backward, the optimizer; what the step saw."""
    x, y = batch(name, step, rank)
    before_forward(name, step)
    loss, indices = loss_of(wrapped, x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return snapshot(model.vq, loss, indices)


def params_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: plain(p) for n, p in model.named_parameters()}


# -- the checks, one training run each ----------------------------------------------

def run_ddp(name: str, rank: int) -> dict:
    from torch.nn.parallel import DistributedDataParallel as DDP
    cfg = CONFIGS[name]
    model = make_model(name)
    opt = make_optimizer(name, model)
    ddp = DDP(model)  # never find_unused_parameters
    record = dict(steps=[], start_codebook=model.vq.weight.detach().clone())
    for step in range(cfg["steps"]):
        record["steps"].append(train_step(name, step, rank, model, ddp, opt))
    record["params"] = params_of(model)
    record["adam_steps"] = adam_steps(model, opt)
    if name == "frozen":
        record["frozen_grad_is_none"] = model.vq.weight.grad is None
        model.vq.freeze_codebook = False
        del ddp
        gc.collect()  # the first wrapper's reducer and hooks go with it
        ddp = DDP(model)
        for step in range(cfg["steps"], cfg["steps"] + cfg["steps_unfrozen"]):
            record["steps"].append(train_step(name, step, rank, model, ddp, opt))
        record["params_unfrozen"] = params_of(model)
        record["unfrozen_grad"] = None if model.vq.weight.grad is None else model.vq.weight.grad.clone()
    return record


def run_fsdp(name: str, rank: int) -> dict:
    from torch.distributed.fsdp import fully_shard
    cfg = CONFIGS[name]
    model = make_model(name)
    fully_shard(model)
    opt = make_optimizer(name, model)
    record = dict(steps=[], weight_type=type(model.vq.weight).__name__)
    for step in range(cfg["steps"]):
        record["steps"].append(train_step(name, step, rank, model, model, opt))  # fully_shard wraps in place
    record["params"] = params_of(model)
    return record


# -- torch.multiprocessing spawn child (check 6) ---------------------------------------

def spawn_child(index: int, payload, x: torch.Tensor, out_path: str) -> None:
    """Runs in a process started by torch.multiprocessing.spawn. ``payload`` is either
    ``pickle.dumps`` of a module (a private copy) or the module itself as a spawn argument
    (torch's pickler: its tensors then live in shared memory with the parent's). One
    training forward on ``x``; what it gave and the stream state around it go to ``out_path``."""
    torch.set_num_threads(1)
    vq = pickle.loads(payload) if isinstance(payload, bytes) else payload
    before = vq.rng_state.clone()
    q, indices, loss = vq(x)
    torch.save(dict(q=q.detach().clone(), indices=indices.clone(), loss=loss.detach().clone(), before=before,
                    after=vq.rng_state.clone(), seeded=vq.seeded, training=vq.training,
                    usage=vq.segment_usage.clone(), shared=vq.rng_state.is_shared()), out_path)


# -- main ------------------------------------------------------------------------------

def main() -> None:
    suite, rank, world, store_file, out_dir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", store=dist.FileStore(store_file, world), rank=rank, world_size=world,
                            timeout=TIMEOUT)
    runs, runner = (DDP_RUNS, run_ddp) if suite == "ddp" else (FSDP_RUNS, run_fsdp)
    results: dict = {"errors": {}}
    saved = os.path.join(out_dir, f"{suite}-rank{rank}.pt")
    for name in runs:
        try:
            results[name] = runner(name, rank)
        except Exception:  # recorded; the rest of the suite would only mismatch collectives
            results["errors"][name] = traceback.format_exc()
        torch.save(results, saved)  # after every run: a crash later (gloo aborts the process) keeps these
        if results["errors"]:
            break
    if not results["errors"]:
        dist.barrier()
        dist.destroy_process_group()
    print(f"rank {rank}: {'ok' if not results['errors'] else 'failed: ' + ', '.join(results['errors'])}", flush=True)


if __name__ == "__main__":
    main()
