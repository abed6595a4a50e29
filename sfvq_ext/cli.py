"""Command-line interface: ``sfvq <command>``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
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


def _fit(args: argparse.Namespace) -> int:
    """Fit a curve to a .npy file or shard directory; write the curve, a
    checkpoint, fit.json (settings and per-stage history) and fit.png into --out."""
    import sfvq_ext
    from sfvq_ext.checkpoint import atomic_write_bytes
    from sfvq_ext.data import as_source
    from sfvq_ext.report import plot_fit

    out = Path(args.out)
    checkpoint = out / "checkpoint.safetensors"
    if args.resume and not checkpoint.is_file():
        raise FileNotFoundError(f"--resume given but {checkpoint} does not exist")
    if checkpoint.exists() and not (args.resume or args.force):
        raise ValueError(f"{out} already holds a run ({checkpoint.name}); "
                         "pass --resume to continue it or --force to start over")
    source = as_source(args.source)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    module = sfvq_ext.fit(source, args.bits, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          seed=args.seed, device=args.device, checkpoint=checkpoint,
                          resume=checkpoint if args.resume else None, checkpoint_every=args.checkpoint_every,
                          progress=not args.quiet)
    sfvq_ext.save(module, out / "curve.safetensors")
    summary = {"source": str(args.source), "bits": args.bits, "epochs": args.epochs, "batch_size": args.batch_size,
               "lr": args.lr, "seed": args.seed, "seconds": time.perf_counter() - started, "history": module.history}
    atomic_write_bytes(out / "fit.json", json.dumps(summary, indent=2).encode())
    rows = torch.randperm(source.num_rows, generator=torch.Generator().manual_seed(0))[:5000]
    plot_fit(module, source.rows(rows.sort().values), out / "fit.png")
    last = module.history[-1]
    print(f"curve of {module.codebook_size} vectors: exact-projection MSE {last['projection_mse']:.5g}, "
          f"perplexity {last['perplexity']:.1f}; wrote {out}/curve.safetensors, fit.json, fit.png")
    return 0


def _quantize(args: argparse.Namespace) -> int:
    """Apply a fitted curve to the vectors of a .npy file, in chunks (memory-mapped
    in and out): points.npy, coords.npy, segments.npy, distances.npy in --out."""
    import sfvq_ext
    from tqdm.auto import tqdm

    module = sfvq_ext.load(args.curve, device=args.device)
    try:
        x = np.load(args.input, mmap_mode="r")
    except Exception as err:
        raise ValueError(f"cannot read {args.input} as a .npy array: {err}") from err
    if x.ndim != 2 or x.shape[1] != module.dim or x.dtype.kind != "f":
        raise ValueError(f"{args.input} must hold a float array (N, {module.dim}) to match the curve, "
                         f"got shape {x.shape} dtype {x.dtype}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n = x.shape[0]
    names = {"points": ((n, module.dim), np.float32), "coords": ((n,), np.float64),
             "segments": ((n,), np.int64), "distances": ((n,), np.float64)}
    # write to temporary names, rename when all rows are done: no half-written outputs
    temp = {k: out / f".{k}.npy.tmp" for k in names}
    arrays = {k: np.lib.format.open_memmap(temp[k], mode="w+", dtype=dt, shape=shape) for k, (shape, dt) in names.items()}
    try:
        for start in tqdm(range(0, n, args.chunk), unit="chunk", disable=args.quiet):
            rows = torch.from_numpy(np.array(x[start : start + args.chunk], dtype=np.float32))
            with torch.no_grad():
                r = module.project(rows.to(module.weight.device), mode=args.mode)
            arrays["points"][start : start + len(rows)] = r.point.cpu().numpy()
            # coordinates in float64: float32 cannot tell 2**24 apart from its neighbours
            arrays["coords"][start : start + len(rows)] = (r.segment.double() + r.t.double()).cpu().numpy()
            arrays["segments"][start : start + len(rows)] = r.segment.cpu().numpy()
            arrays["distances"][start : start + len(rows)] = r.dist.double().cpu().numpy()
        for k, a in arrays.items():
            a.flush()
            del a
        arrays.clear()
        for k in names:
            os.replace(temp[k], out / f"{k}.npy")
    finally:
        arrays.clear()
        for path in temp.values():
            path.unlink(missing_ok=True)
    print(f"quantized {n} vectors onto {args.curve} ({args.mode}); wrote {', '.join(f'{k}.npy' for k in names)} to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sfvq", description="Space-filling vector quantization tools")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="verify the install: correctness against the oracle, and speed")
    check.add_argument("--n", type=int, default=65536, help="number of input vectors")
    check.add_argument("--dim", type=int, default=512, help="vector width D")
    check.add_argument("--k", type=int, default=1024, help="codebook size K")
    check.set_defaults(run=_check)

    fit = commands.add_parser("fit", help="fit an SFVQ curve to vectors in a .npy file or a directory of .npy shards")
    fit.add_argument("source", help=".npy file (N, D) or a directory of .npy shards, read memory-mapped")
    fit.add_argument("--bits", type=int, required=True, help="curve of 2**bits vectors")
    fit.add_argument("--out", required=True, help="output directory")
    fit.add_argument("--epochs", type=int, default=5, help="epochs per stage (default 5)")
    fit.add_argument("--batch-size", type=int, default=256)
    fit.add_argument("--lr", type=float, default=1e-3)
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--device", default=None, help="cpu (default), cuda, cuda:1, ...")
    fit.add_argument("--checkpoint-every", type=int, default=None, help="also checkpoint every N steps")
    fit.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    fit.add_argument("--force", action="store_true", help="start over even if --out holds a run")
    fit.add_argument("--quiet", action="store_true", help="no progress bars")
    fit.set_defaults(run=_fit)

    quantize = commands.add_parser("quantize", help="project the vectors of a .npy file onto a fitted curve")
    quantize.add_argument("curve", help="curve.safetensors written by `sfvq fit` (or sfvq_ext.save)")
    quantize.add_argument("input", help=".npy file (N, D)")
    quantize.add_argument("--out", required=True, help="output directory")
    quantize.add_argument("--mode", choices=["exact", "vertex"], default="exact")
    quantize.add_argument("--chunk", type=int, default=65536, help="rows per chunk")
    quantize.add_argument("--device", default=None)
    quantize.add_argument("--quiet", action="store_true")
    quantize.set_defaults(run=_quantize)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, FileNotFoundError) as err:  # bad input: a message, not a traceback
        parser.exit(2, f"sfvq {args.command}: error: {err}\n")


if __name__ == "__main__":
    sys.exit(main())
