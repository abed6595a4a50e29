"""Time the exact projection against named baselines in one run and write a
markdown table (ratios matter, not absolute times: the machines are shared).

    python benchmarks/project_table.py            # full grid, D in {128, 512} x K in {16, 256, 1024, 4096}
    python benchmarks/project_table.py --quick    # only D=512, K=1024
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import sfvq_ext
from sfvq_ext import reference

N = 65536
AUTHORS_BUDGET = 2**29  # elements of the authors' (N, D, K) tensor we allow


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def contenders(x, c):
    import faiss

    index = faiss.IndexFlatL2(c.shape[1])
    index.add(c.numpy())
    xn = x.numpy()
    ct = c.t()
    copy = torch.empty_like(x)
    n_auth = max(64, min(len(x), AUTHORS_BUDGET // (c.shape[0] * c.shape[1])))
    xa = x[:n_auth]
    return {
        "sfvq project": (lambda: sfvq_ext.project(x, c), 1.0),
        "torch.mm": (lambda: torch.mm(x, ct), 1.0),
        # What projection must move at least: read x, write one point per row. Into a
        # tensor already mapped: a fresh one (x.clone()) times page faults, which vary 5x run to run.
        "copy x": (lambda: copy.copy_(x), 1.0),
        "faiss flat k=1": (lambda: index.search(xn, 1), 1.0),
        "cdist+argmin": (lambda: torch.cdist(x, c).argmin(1), 1.0),
        # Run on fewer rows (its N x D x K tensor), scaled to N.
        "authors (PyTorch)": (lambda: reference.authors_project(xa, c), len(x) / n_auth),
    }


def peak_extra_memory_mib(n: int = 10**6, d: int = 512, k: int = 1024) -> float:
    """Peak RSS added by one projection beyond its inputs and outputs, measured
    in a fresh process: peak RSS after the call minus RSS before it minus outputs."""
    code = f"""
import torch, sfvq_ext
def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
x = torch.randn({n}, {d}); c = torch.randn({k}, {d})
sfvq_ext.project(x[:4096], c)  # load everything once
before = status('VmRSS')
r = sfvq_ext.project(x, c)
outputs = sum(t.numel() * t.element_size() for t in r)
print((status('VmHWM') - before - outputs) / 2**20)
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="only D=512, K=1024")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "cpu_project.md"))
    args = parser.parse_args()
    import faiss

    torch.set_num_threads(2)
    faiss.omp_set_num_threads(2)
    shapes = [(512, 1024)] if args.quick else [(d, k) for d in (128, 512) for k in (16, 256, 1024, 4096)]
    gen = torch.Generator().manual_seed(0)
    rows = []
    for d, k in shapes:
        x = torch.randn(N, d, generator=gen)
        c = torch.randn(k, d, generator=gen)
        ms = {}
        for name, (fn, scale) in contenders(x, c).items():
            ms[name] = median_time(fn, args.repeats) * scale * 1e3
            print(f"D={d} K={k} {name}: {ms[name]:.1f} ms", flush=True)
        rows.append((d, k, ms))
    memory = peak_extra_memory_mib()

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    names = list(rows[0][2])
    lines = [
        "# CPU projection benchmark",
        "",
        f"- machine: {cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}, faiss {faiss.__version__}",
        f"- date: {datetime.date.today()}, N = {N} float32 rows, median of {args.repeats} runs after a warm-up",
        f"- command: `python benchmarks/project_table.py{' --quick' if args.quick else ''}`",
        "- `authors (PyTorch)` runs on fewer rows (its N x D x K tensor must fit) and is scaled to N",
        "- `copy x`: x copied into a preallocated tensor, the memory traffic projection cannot avoid (it reads x and "
        "writes a point per row; its fresh outputs also cost page faults, which the copy does not time)",
        "",
        "| D | K | " + " | ".join(f"{n} (ms)" for n in names)
        + " | project / mm | project / copy | project / faiss | authors / project |",
        "|---|---|" + "---|" * (len(names) + 4),
    ]
    for d, k, ms in rows:
        p = ms["sfvq project"]
        lines.append(f"| {d} | {k} | " + " | ".join(f"{ms[n]:.1f}" for n in names)
                     + f" | {p / ms['torch.mm']:.2f} | {p / ms['copy x']:.2f} | {p / ms['faiss flat k=1']:.2f}"
                     + f" | {ms['authors (PyTorch)'] / p:.0f}x |")
    lines += ["", f"Peak extra memory of `project` at N = 10^6, D = 512, K = 1024 beyond inputs and outputs: "
              f"{memory:.1f} MiB", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
