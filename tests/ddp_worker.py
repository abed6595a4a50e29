"""The SFVQ module on 2 gloo processes (run by tests/test_distributed.py under
torchrun; not collected by pytest). Any failed check raises, so the process exits
non-zero. The process group's timeout is short: a hidden collective fails within
seconds instead of hanging for the default 30 minutes.

    torchrun --standalone --nproc-per-node 2 tests/ddp_worker.py STORE_FILE
"""

import sys
import warnings
from datetime import timedelta

import torch
import torch.distributed as dist

import sfvq_ext
from worker_exit import exit_without_finalizing  # tests/, the script's directory

TIMEOUT = timedelta(seconds=15)


def no_hidden_collective(rank: int, store: dist.Store) -> None:
    """Issue 13, input 2: a plain module (sync_codebook=False) used on rank 0 alone.
    Rank 1 enters no collective until rank 0 says it is done (through a file store),
    so a collective issued by rank 0 would block until TIMEOUT and raise."""
    if rank == 0:
        m = sfvq_ext.SFVQ(4, 3)
        x = torch.randn(32, 4)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "each rank starts its own curve": true, and meant here
            for _ in range(3):
                q, _, loss = m(x)
                (q.sum() + loss).backward()
        m.expand()
        m.initialize(x)
        m.manual_seed(0)
        m(x)
        m.eval()
        m(x)
        store.set("rank0_done", "1")
    else:
        store.wait(["rank0_done"], timedelta(seconds=120))


def ddp_usage_counts(rank: int) -> None:
    """Issue 13, input 1: DDP around SFVQ(4, 3), 5 steps of 32 rows on rank 0 and 64
    on rank 1: 480 counted on both ranks, the counts of every rank's indices."""
    torch.manual_seed(10 + rank)  # each rank its own data and noise
    m = sfvq_ext.SFVQ(4, 3, sync_codebook=True)
    ddp = torch.nn.parallel.DistributedDataParallel(m)
    opt = torch.optim.Adam(ddp.parameters(), lr=1e-2)
    rows = 32 if rank == 0 else 64
    seen = []
    for _ in range(5):
        q, idx, loss = ddp(torch.randn(rows, 4) + rank)
        opt.zero_grad()
        (loss + q.square().mean()).backward()
        opt.step()
        seen.append(idx)
    assert int(m.segment_usage.sum()) == 480, f"rank {rank}: {int(m.segment_usage.sum())} hits counted, expected 480"
    everyone = [None, None]
    dist.all_gather_object(everyone, torch.cat(seen))
    oracle = torch.bincount(torch.cat(everyone), minlength=m.current_codebook_size - 1)
    assert torch.equal(m.segment_usage, oracle), f"rank {rank}: {m.segment_usage.tolist()} vs {oracle.tolist()}"
    weights = [None, None]
    dist.all_gather_object(weights, (m.weight.detach(), m.perplexity))
    assert torch.equal(weights[0][0], weights[1][0]), "codebooks differ across ranks"
    assert weights[0][1] == weights[1][1], "perplexities differ across ranks"


def counts_of_the_global_batch(rank: int) -> None:
    """With the same seed on every rank (the same dither, as fit shares it), the synced
    counts of a batch split over the ranks are those of the whole batch in one process:
    the count semantics of fit under torch.distributed."""
    full = torch.randn(96, 4, generator=torch.Generator().manual_seed(5))
    part = full[:32] if rank == 0 else full[32:]
    start = sfvq_ext.init_codebook(full)
    split = sfvq_ext.SFVQ(4, 3, gradient="none", sync_codebook=True)
    whole = sfvq_ext.SFVQ(4, 3, gradient="none")
    for m in (split, whole):
        m.set_codebook(start)
        m.manual_seed(9)
    for step in range(3):
        if step == 1:
            split.expand(), whole.expand()
        split(part), whole(full)
    assert torch.equal(split.segment_usage, whole.segment_usage), \
        f"rank {rank}: {split.segment_usage.tolist()} vs {whole.segment_usage.tolist()}"
    assert int(split.segment_usage.sum()) == 2 * 96


def main() -> None:
    dist.init_process_group("gloo", timeout=TIMEOUT)
    torch.set_num_threads(1)
    rank = dist.get_rank()
    store = dist.FileStore(sys.argv[1], dist.get_world_size())
    no_hidden_collective(rank, store)
    ddp_usage_counts(rank)
    counts_of_the_global_batch(rank)
    dist.barrier()
    dist.destroy_process_group()
    print(f"rank {rank}: ok")


if __name__ == "__main__":
    main()
    exit_without_finalizing()
