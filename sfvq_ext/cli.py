"""Command-line interface: ``sfvq <command>``."""

from __future__ import annotations

import argparse
import sys
import time

import torch


def _check(args: argparse.Namespace) -> int:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sfvq", description="Space-filling vector quantization tools")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="verify the install: correctness against the oracle, and speed")
    check.add_argument("--n", type=int, default=65536, help="number of input vectors")
    check.add_argument("--dim", type=int, default=512, help="vector width D")
    check.add_argument("--k", type=int, default=1024, help="codebook size K")
    check.set_defaults(run=_check)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
