"""A fit run in its own process, for the kill-and-resume and multi-process tests
(not collected by pytest). Under torchrun it joins a gloo process group first.

    python tests/fit_worker.py DATA OUT [--kill-at BITS STEP] [--resume] [--ddp-check] ...
"""

import argparse
import os
import signal
from datetime import timedelta

import torch
import torch.distributed as dist

import sfvq_ext
from worker_exit import exit_without_finalizing  # tests/, the script's directory


def ddp_check(rank: int) -> None:
    """The module under DistributedDataParallel on 2 ranks: different data per
    rank, gradients averaged, the starting curve broadcast (sync_codebook), so the
    codebooks stay identical across ranks."""
    torch.manual_seed(100 + rank)  # each rank its own data and noise
    m = sfvq_ext.SFVQ(6, 3, sync_codebook=True)
    ddp = torch.nn.parallel.DistributedDataParallel(m)
    opt = torch.optim.Adam(ddp.parameters(), lr=1e-2)
    for step in range(10):
        out, _, loss = ddp(torch.randn(64, 6) + rank)
        opt.zero_grad()
        (loss + out.square().mean()).backward()
        opt.step()
        if step == 4:
            m.expand()
    gathered = [torch.empty_like(m.weight) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, m.weight.detach())
    assert all(torch.equal(g, gathered[0]) for g in gathered), "codebooks differ across ranks under DDP"
    assert m.current_codebook_size == 8 and torch.isfinite(m.weight).all()
    del ddp, opt  # the reducer and its gloo work go before the process group does


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("out")
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--window", type=int, default=None, help="rows per loss window (default: the preset's)")
    p.add_argument("--checkpoint")
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--kill-at", type=int, nargs=2, metavar=("BITS", "STEP"))
    p.add_argument("--ddp-check", action="store_true")
    args = p.parse_args()
    if "WORLD_SIZE" in os.environ:
        dist.init_process_group("gloo", timeout=timedelta(seconds=120))  # a lost peer fails, never hangs
    torch.set_num_threads(1)

    def kill_at(info):
        if args.kill_at and (info["bits"], info["step"]) == tuple(args.kill_at):
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no final save: a real crash

    module = sfvq_ext.fit(args.data, args.bits, epochs=args.epochs, batch_size=args.batch_size, seed=3,
                          checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every,
                          resume=args.checkpoint if args.resume else None, progress=False, callback=kill_at,
                          **({} if args.window is None else {"window": args.window}))
    if not dist.is_initialized() or dist.get_rank() == 0:
        sfvq_ext.save(module, args.out)
    if dist.is_initialized():
        if args.ddp_check:
            ddp_check(dist.get_rank())
        dist.barrier()  # both ranks done before either tears down (a rank aborted once at exit under load)
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
    exit_without_finalizing()
