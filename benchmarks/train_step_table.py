"""Training-step throughput (forward + backward + Adam step, vectors per second)
and peak memory, against named baselines in one run; writes a markdown table.

    python benchmarks/train_step_table.py                 # D = 512, batch 4096, K in {64, 1024, 4096}
    python benchmarks/train_step_table.py --device cuda   # the same on a GPU

Each measurement runs in a fresh process, so its peak memory is its own.
Contenders:
  sfvq SFVQ      the SFVQ module (gradient="none"): fused dithered search + sparse backward
  torch cdist    the same step in plain PyTorch written well: cdist + argmin + gather
  authors        the original authors' step (reference.authors_train_step): an
                 (N, D, K-1) difference tensor; run on fewer rows where that tensor
                 would not fit (its batch is in the table), throughput per vector
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import sfvq_ext
from sfvq_ext import reference

D, BATCH = 512, 4096
AUTHORS_BUDGET = 2**29  # elements of the authors' (N, D, K-1) tensor we allow (2 GiB in float32)
CONTENDERS = ["sfvq SFVQ", "torch cdist", "authors"]


def rss(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def make_step(name: str, K: int, x: torch.Tensor, pool: torch.Tensor):
    """A closure doing one full training step of contender `name`. The codebook is
    K vectors drawn from the data: a curve spread over the data, as in mid-training
    (right after an expansion vertices nearly coincide, which makes the exact search
    re-rank many near-ties: see the note in the results)."""
    gen = torch.Generator().manual_seed(0)
    start = pool[torch.randperm(len(pool), generator=gen)[:K]].clone()
    if name == "sfvq SFVQ":
        m = sfvq_ext.SFVQ(x.shape[1], K.bit_length() - 1, gradient="none", start_bits=K.bit_length() - 1,
                          device=x.device)
        m.initialize(pool[:4096])
        with torch.no_grad():
            m.weight.copy_(start)
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)

        def step():
            _, _, loss = m(x)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return step
    codebook = torch.nn.Parameter(start)
    opt = torch.optim.Adam([codebook], lr=1e-3)
    if name == "authors":
        def step():
            dither = torch.rand(K - 1, generator=gen).to(x.device)
            reference.authors_train_step(x, codebook, opt, dither)
        return step

    def step():  # torch cdist
        dither = torch.rand(K - 1, generator=gen).to(x.device)
        points = reference.dithered_points(codebook, dither)
        segment = torch.cdist(x, points.detach()).argmin(dim=1)
        loss = torch.nn.functional.mse_loss(x, points[segment])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def measure_one(name: str, K: int, batch: int, device: str, repeats: int) -> dict:
    pool = torch.randn(max(batch, K), D, generator=torch.Generator().manual_seed(1)).to(device)
    step = make_step(name, K, pool[:batch], pool)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    step()  # warm-up (allocations, thread pools)
    sync()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = rss("VmRSS")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() if device.startswith("cuda") else rss("VmHWM")) - before
    seconds = statistics.median(times)
    return {"name": name, "K": K, "batch": batch, "seconds": seconds, "vectors_per_s": batch / seconds,
            "peak_extra_mib": max(peak, 0) / 2**20}


def run_isolated(name: str, K: int, batch: int, device: str, repeats: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", name, str(K), str(batch), "--device", device,
                          "--repeats", str(repeats)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ks", type=int, nargs="+", default=[64, 1024, 4096])
    parser.add_argument("--one", nargs=3, metavar=("NAME", "K", "BATCH"), help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.one:
        name, K, batch = args.one[0], int(args.one[1]), int(args.one[2])
        print(json.dumps(measure_one(name, K, batch, args.device, args.repeats)))
        return

    rows = []
    for K in args.ks:
        results = {}
        for name in CONTENDERS:
            batch = BATCH
            if name == "authors":
                batch = max(64, min(BATCH, AUTHORS_BUDGET // (D * (K - 1))))
            results[name] = run_isolated(name, K, batch, args.device, args.repeats)
            print(results[name], flush=True)
        rows.append((K, results))
    # memory must not scale with N*K: a batch 16x larger, at the smallest and the largest K
    big = {K: run_isolated("sfvq SFVQ", K, 16 * BATCH, args.device, 3) for K in (args.ks[0], args.ks[-1])}
    print(big, flush=True)

    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    lines = [
        f"# Training-step benchmark ({args.device})",
        "",
        f"- machine: {device_name}, torch {torch.__version__}",
        f"- date: {datetime.date.today()}, D = {D}, float32, batch {BATCH} unless noted, median of "
        f"{args.repeats} steps after a warm-up; each measurement in a fresh process",
        "- command: `python benchmarks/train_step_table.py" + (f" --device {args.device}`" if args.device != "cpu" else "`"),
        "- a step = forward (dithered nearest-point search), backward, Adam update",
        "- `authors`: the original code's step (an (N, D, K-1) tensor), on fewer rows where that tensor "
        "would exceed 2 GiB; its throughput is per vector of its own batch",
        "- peak extra memory: peak RSS (GPU: peak allocated) during the steps beyond what was held before them",
        "",
        "| K | sfvq SFVQ (vectors/s) | torch cdist (vectors/s) | authors (vectors/s) [batch] | sfvq / cdist | sfvq / authors "
        "| peak extra MiB: sfvq / cdist / authors |",
        "|---|---|---|---|---|---|---|",
    ]
    for K, r in rows:
        s, c, a = r["sfvq SFVQ"], r["torch cdist"], r["authors"]
        lines.append(f"| {K} | {s['vectors_per_s']:,.0f} | {c['vectors_per_s']:,.0f} | {a['vectors_per_s']:,.0f} "
                     f"[{a['batch']}] | {s['vectors_per_s'] / c['vectors_per_s']:.2f}x | "
                     f"{s['vectors_per_s'] / a['vectors_per_s']:.1f}x | {s['peak_extra_mib']:.0f} / "
                     f"{c['peak_extra_mib']:.0f} / {a['peak_extra_mib']:.0f} |")
    small_k, large_k = big[args.ks[0]], big[args.ks[-1]]
    lines += ["", f"Memory does not scale with N·K: at batch {16 * BATCH} the sfvq step peaks at "
              f"{small_k['peak_extra_mib']:.0f} MiB beyond its inputs with K = {args.ks[0]} and "
              f"{large_k['peak_extra_mib']:.0f} MiB with K = {args.ks[-1]} ({large_k['vectors_per_s']:,.0f} vectors/s): "
              f"O(N·D) autograd temporaries (one batch of vectors is {16 * BATCH * D * 4 / 2**20:.0f} MiB), "
              f"while an N x K float32 buffer alone would take {16 * BATCH * args.ks[-1] * 4 / 2**20:.0f} MiB.", ""]
    out = Path(args.out or Path(__file__).parent / "results" / f"{args.device.split(':')[0]}_train_step.md")
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
