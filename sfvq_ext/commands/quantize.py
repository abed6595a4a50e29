"""``sfvq quantize``: project the vectors of a .npy file or a directory of .npy shards
onto a fitted curve, in one process, memory-mapped in and out, a chunk of rows at a time."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

# What `sfvq quantize` can write, in this order: dtype, and the column from a Projection.
OUTPUTS = {
    "points": (np.float32, lambda r: r.point.float()),  # (N, D); numpy has no bfloat16
    # float64: a float32 coordinate cannot tell 2**24 apart from its neighbours
    "coords": (np.float64, lambda r: r.segment.double() + r.t.double()),
    "segments": (np.int64, lambda r: r.segment),
    "distances": (np.float64, lambda r: r.dist.double()),
}

LAYOUT = """\
outputs (rows in the order of the input rows):
  points     (N, D) float32  the nearest point on the curve
  coords     (N,)   float64  its curve coordinate u = segment + t
  segments   (N,)   int64    its segment i (from c_i to c_{i+1})
  distances  (N,)   float64  the squared distance to it

layout: a .npy INPUT, or --concat, gives one file per output: OUT/points.npy,
OUT/coords.npy, ... A directory INPUT gives one directory per output, holding one
file per input shard under the shard's name: OUT/coords/part-007.npy holds the
coordinates of INPUT/part-007.npy (so OUT/points is itself a shard directory).

Nothing is half-written: outputs go to a temporary directory inside OUT and are
moved into place (replacing outputs of the same names) only when every row of
every shard is done; on an error nothing new is left, and an OUT this command
created is removed."""


def output_names(text: str) -> tuple[str, ...]:
    """--outputs: a comma-separated subset of OUTPUTS -> those names in OUTPUTS' order."""
    names = {name.strip() for name in text.split(",")} - {""}
    if not names or not names <= OUTPUTS.keys():
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(OUTPUTS)}, got {text!r}")
    return tuple(name for name in OUTPUTS if name in names)


@contextlib.contextmanager
def staging_directory(out: Path) -> Iterator[Path]:
    """A fresh temporary directory inside ``out`` (``out`` and missing parents are
    created), removed when the block ends. If the block raises (Ctrl-C too), the
    directories this call created are removed as well, as far as they are empty."""
    created = [p for p in (out, *out.parents) if not p.exists()]  # deepest first
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".sfvq-quantize-", dir=out))
    done = False
    try:
        yield staging
        done = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not done:
            for path in created:
                try:
                    path.rmdir()
                except OSError:  # not empty: someone else wrote there meanwhile
                    break


def publish(staging: Path, out: Path, names: list[str]) -> None:
    """Move each ``staging/name`` (file or directory) to ``out/name``, replacing what is there."""
    for name in names:
        new, target = staging / name, out / name
        if target.is_dir() or (new.is_dir() and target.exists()):  # os.replace cannot replace these
            os.replace(target, staging / f"replaced.{name}")  # removed with the staging directory
        os.replace(new, target)


def project_to_files(module, source, sets: list[tuple[list[int], dict[str, Path]]], *, chunk: int, mode: str,
                     progress: bool) -> None:
    """Project the rows of ``source`` (an :class:`~sfvq_ext.data.NpyShards`) onto the curve
    ``module`` (an :class:`~sfvq_ext.SFVQ`). Each of ``sets`` is ``(shard indices, {output
    name: .npy path})``: the rows of those shards, in order, go to those files (dtypes and
    shapes as in OUTPUTS), written through memory maps ``chunk`` rows at a time. One
    progress bar counts the rows of all sets."""
    from tqdm.auto import tqdm

    with tqdm(total=source.num_rows, unit="rows", unit_scale=True, disable=not progress) as bar:
        for shards, files in sets:
            n = sum(source.shards[s].shape[0] for s in shards)
            arrays = {name: np.lib.format.open_memmap(path, mode="w+", dtype=OUTPUTS[name][0],
                                                      shape=(n, module.dim) if name == "points" else (n,))
                      for name, path in files.items()}
            at = 0
            for _, _, rows in source.blocks(chunk, shards):
                with torch.no_grad():
                    result = module.project(torch.from_numpy(rows).to(module.weight.device), mode=mode)
                for name, array in arrays.items():
                    array[at : at + len(rows)] = OUTPUTS[name][1](result).cpu().numpy()
                at += len(rows)
                bar.update(len(rows))
            for array in arrays.values():
                array.flush()


def run_quantize(args: argparse.Namespace) -> int:
    """Apply a fitted curve to the rows of INPUT; see LAYOUT for what is written where."""
    import sfvq_ext
    from sfvq_ext.data import NpyShards

    if args.chunk < 1:
        raise ValueError(f"--chunk must be a positive number of rows, got {args.chunk}")
    module = sfvq_ext.load(args.curve, device=args.device)
    source = NpyShards(args.input, name="INPUT")
    if source.dim != module.dim:
        raise ValueError(f"INPUT: {args.input} holds vectors of width {source.dim}, but the curve {args.curve} "
                         f"has width {module.dim}: expected a float array (N, {module.dim})")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    per_shard = Path(args.input).is_dir() and not args.concat
    with staging_directory(out) as staging:
        if per_shard:
            for name in args.outputs:
                (staging / name).mkdir()
            sets = [([s], {name: staging / name / path.name for name in args.outputs})
                    for s, path in enumerate(source.paths)]
            written = list(args.outputs)
        else:
            sets = [(list(range(len(source.paths))), {name: staging / f"{name}.npy" for name in args.outputs})]
            written = [f"{name}.npy" for name in args.outputs]
        project_to_files(module, source, sets, chunk=args.chunk, mode=args.mode, progress=not args.quiet)
        publish(staging, out, written)
    shards = f" from {len(source.paths)} shards" if len(source.paths) > 1 else ""
    print(f"quantized {source.num_rows} vectors{shards} onto {args.curve} ({args.mode}); "
          f"wrote {', '.join(written)} to {out}")
    return 0


def add_commands(commands) -> None:
    """Register ``quantize`` on the subparsers ``commands``."""
    quantize = commands.add_parser(
        "quantize", help="project the vectors of a .npy file or a directory of .npy shards onto a fitted curve",
        description="Project every row of INPUT onto the curve: its nearest point, curve coordinate,\n"
        "segment and squared distance. One process reads INPUT memory-mapped, a chunk of\n"
        "rows at a time, and writes the outputs memory-mapped.",
        epilog=LAYOUT, formatter_class=argparse.RawDescriptionHelpFormatter)
    quantize.add_argument("curve", help="curve.safetensors written by `sfvq fit` (or sfvq_ext.save)")
    quantize.add_argument("input", help=".npy file (N, D), or a directory of .npy shards (its *.npy files in name "
                          "order, each a 2-D float array of width D)")
    quantize.add_argument("--out", required=True, help="output directory (created if missing)")
    quantize.add_argument("--outputs", type=output_names, default=tuple(OUTPUTS), metavar="LIST",
                          help=f"which outputs to write, comma-separated (default: {','.join(OUTPUTS)}); e.g. "
                          "coords,segments,distances skips points, an (N, D) array as large as the input")
    quantize.add_argument("--concat", action="store_true", help="directory INPUT: write each output as one file, "
                          "the shards' rows in name order, instead of one file per shard")
    quantize.add_argument("--mode", choices=["exact", "vertex"], default="exact",
                          help="exact: the nearest point on the curve (default); vertex: the original authors' "
                          "approximation (the two segments at the nearest vertex)")
    quantize.add_argument("--chunk", type=int, default=65536, help="rows projected at a time (default 65536)")
    quantize.add_argument("--device", default=None, help="cpu (default), cuda, cuda:1, ...")
    quantize.add_argument("--quiet", action="store_true", help="no progress bar")
    quantize.set_defaults(run=run_quantize)
