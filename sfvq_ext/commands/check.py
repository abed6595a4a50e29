"""``sfvq check`` (verify an install) and ``sfvq demo`` (the shipped worked example)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def run_check(args: argparse.Namespace) -> int:
    """Self-check of an install: build facts, the exact projection against the
    brute-force oracle, and its speed next to the GEMM it is built on."""
    import sfvq_ext
    from sfvq_ext import reference

    for key, value in sfvq_ext.build_info().items():
        print(f"{key:>18}: {value}")
    gen = torch.Generator().manual_seed(0)
    codebook = torch.randn(args.k, args.dim, generator=gen) + 100.0  # far from the origin on purpose
    x = torch.randn(args.n, args.dim, generator=gen) + 100.0
    result = sfvq_ext.project(x, codebook)
    oracle = reference.project(x[:2000], codebook)
    rel = ((result.dist[:2000].double() - oracle.dist).abs() / oracle.dist).max().item()
    print(f"exact projection vs brute force (2000 rows): max relative distance error {rel:.2e}")

    def best_of(fn, repeats=5):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    t_project = best_of(lambda: sfvq_ext.project(x, codebook))
    t_mm = best_of(lambda: torch.mm(x, codebook.t()))
    print(f"project N={args.n} D={args.dim} K={args.k}: {t_project * 1e3:.1f} ms "
          f"({t_project / t_mm:.2f}x torch.mm of the same shape)")
    ok = rel <= 1e-6
    print("OK" if ok else "FAILED: distance error above 1e-6")
    return 0 if ok else 1


def run_demo(args: argparse.Namespace) -> int:
    """Fit SFVQ on the shipped shape-world StyleGAN2 and write an HTML report."""
    from sfvq_ext.demo.report import run_demo as write_demo

    page = write_demo(args.out, bits=args.bits, seed=args.seed, progress=not args.quiet)
    print(f"wrote {page} (the report) and {Path(page).parent / 'explore' / 'index.html'} (the curve explorer): "
          "open them in a browser")
    return 0


def add_commands(commands) -> None:
    """Register ``check`` and ``demo`` on the subparsers ``commands``."""
    check = commands.add_parser("check", help="verify the install: correctness against the oracle, and speed")
    check.add_argument("--n", type=int, default=65536, help="number of input vectors")
    check.add_argument("--dim", type=int, default=512, help="vector width D")
    check.add_argument("--k", type=int, default=1024, help="codebook size K")
    check.set_defaults(run=run_check)

    demo = commands.add_parser("demo", help="fit SFVQ on the shipped demo generator and write an HTML report")
    demo.add_argument("--out", default="sfvq-demo", help="output directory (default: sfvq-demo)")
    demo.add_argument("--bits", type=int, default=6)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(run=run_demo)
