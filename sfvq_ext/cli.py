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


GENERATOR_FILE = "generator.json"


def _generator_options(args: argparse.Namespace) -> dict:
    return {"nvlabs_code": args.nvlabs_code, "trust_pickle": args.trust_pickle, "class_idx": args.class_idx,
            "latent": args.latent, "truncation": args.truncation}


def _sampling_options(options: dict) -> dict:
    """truncation / class_idx for sample_latents and latent_sampler, where given."""
    return {k: options[k] for k in ("truncation", "class_idx") if options.get(k) is not None}


def _open_generator(spec: str, options: dict, device):
    from sfvq_ext.adapters import open_generator

    return open_generator(spec, device=device, **options)


def _fit(args: argparse.Namespace) -> int:
    """Fit a curve to a .npy file or shard directory, or to latents a generator
    samples on the fly (--generator); write the curve, a checkpoint, fit.json
    (settings and per-stage history) and fit.png into --out."""
    import sfvq_ext
    from sfvq_ext.data import SamplerSource, as_source, draw
    from sfvq_ext.report import plot_fit

    out = Path(args.out)
    checkpoint = out / "checkpoint.safetensors"
    if args.resume and not checkpoint.is_file():
        raise FileNotFoundError(f"--resume given but {checkpoint} does not exist")
    if checkpoint.exists() and not (args.resume or args.force):
        raise ValueError(f"{out} already holds a run ({checkpoint.name}); "
                         "pass --resume to continue it or --force to start over")
    if (args.source is None) == (args.generator is None):
        raise ValueError("give either SOURCE (.npy file or directory) or --generator SPEC, not both")
    samples_per_epoch = None
    if args.generator is not None:
        options = _generator_options(args)
        adapter = _open_generator(args.generator, options, args.device)
        if options["truncation"] is None and hasattr(adapter, "truncation"):
            options["truncation"] = adapter.truncation  # BigGAN: record the value it renders with
        source = SamplerSource(adapter.latent_sampler(**_sampling_options(options)), dim=adapter.latent_dim)
        samples_per_epoch = args.samples_per_epoch
    else:
        source = as_source(args.source)
    out.mkdir(parents=True, exist_ok=True)
    if args.generator is not None:  # render/edit/augment on this run use the same generator
        _write_record(out / GENERATOR_FILE, {"spec": args.generator, **options})
    started = time.perf_counter()
    module = sfvq_ext.fit(source, args.bits, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          seed=args.seed, device=args.device, checkpoint=checkpoint,
                          resume=checkpoint if args.resume else None, checkpoint_every=args.checkpoint_every,
                          samples_per_epoch=samples_per_epoch, progress=not args.quiet)
    sfvq_ext.save(module, out / "curve.safetensors")
    summary = {"source": str(args.source or args.generator), "bits": args.bits, "epochs": args.epochs,
               "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
               "seconds": time.perf_counter() - started, "history": module.history}
    _write_record(out / "fit.json", summary)
    plot_fit(module, draw(source, 5000, torch.Generator().manual_seed(0)), out / "fit.png")
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
    if not isinstance(x, np.ndarray):  # an .npz archive
        raise ValueError(f"{args.input} is not a single .npy array (an .npz archive?); save one array with np.save")
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
            chunk = np.asarray(x[start : start + args.chunk])
            with np.errstate(over="ignore"):  # too-large values are reported just below
                rows = torch.from_numpy(chunk.astype(np.float32))
            # row numbers of the file, not of the chunk; and say when float32 (the curve's
            # dtype) cannot hold finite values, rather than calling them NaN or Inf
            bad = ~np.isfinite(rows.numpy()).all(axis=1)
            if bad.any():
                row = start + int(bad.argmax())
                what = "holds NaN or Inf" if not np.isfinite(chunk[row - start]).all() else "has values beyond float32's range"
                raise ValueError(f"{args.input}: row {row} {what}; remove or rescale it first")
            with torch.no_grad():
                r = module.project(rows.to(module.weight.device), mode=args.mode)
            arrays["points"][start : start + len(rows)] = r.point.float().cpu().numpy()  # numpy has no bfloat16
            # coordinates in float64: float32 cannot tell 2**24 apart from its neighbours
            arrays["coords"][start : start + len(rows)] = (r.segment.double() + r.t.double()).cpu().numpy()
            arrays["segments"][start : start + len(rows)] = r.segment.cpu().numpy()
            arrays["distances"][start : start + len(rows)] = r.dist.double().cpu().numpy()
        for a in arrays.values():
            a.flush()
        arrays.clear()  # close the memory maps before the renames
        for k in names:
            os.replace(temp[k], out / f"{k}.npy")
    finally:
        arrays.clear()
        for path in temp.values():
            path.unlink(missing_ok=True)
    print(f"quantized {n} vectors onto {args.curve} ({args.mode}); wrote {', '.join(f'{k}.npy' for k in names)} to {out}")
    return 0


def _open_run(args: argparse.Namespace):
    """RUN, its fitted curve, its generator's adapter (from RUN/generator.json, or --generator) and
    the generator's spec and options as one record ({"generator": spec, ...})."""
    import sfvq_ext

    run = Path(args.run_dir)
    curve = sfvq_ext.load(run / "curve.safetensors", device=args.device)
    if args.generator is not None:
        spec, options = args.generator, _generator_options(args)
    elif (run / GENERATOR_FILE).is_file():
        saved = json.loads((run / GENERATOR_FILE).read_text())
        spec, options = saved.pop("spec"), saved
    else:
        raise ValueError(f"{run} was not fitted on a generator (no {GENERATOR_FILE}); name one with --generator SPEC")
    adapter = _open_generator(spec, options, args.device)
    if adapter.latent_dim != curve.dim:
        raise ValueError(f"the generator's latents have width {adapter.latent_dim}, the curve in {run} has {curve.dim}")
    return run, curve, adapter, {"generator": spec, **options}


def _parse_layers(text: str | None):
    if text is None:
        return None
    first, sep, last = text.partition("-")
    try:
        return range(int(first), int(last if sep else first) + 1)
    except ValueError:
        raise ValueError(f"--layers must be A-B or A (inclusive layer indices), got {text!r}") from None


def _check_segment(curve, segment: int) -> None:
    if not 0 <= segment <= curve.codebook_size - 2:
        raise ValueError(f"--segment must be in [0, {curve.codebook_size - 2}], got {segment}")


def _write_record(path: Path, record: dict) -> None:
    from sfvq_ext.checkpoint import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(record, indent=2).encode())


def _scale(args: argparse.Namespace, adapter, curve) -> int:
    """--scale, or by default enough pixel repetition for tiles of at least 96 px."""
    if args.scale is not None:
        return args.scale
    side = adapter.render(curve.codebook[:1].detach().cpu(), progress=False).shape[-1]
    return max(1, 96 // side)


def _render(args: argparse.Namespace) -> int:
    """The codebook in curve order, rendered: RUN/codebook.png (+ codebook.json)."""
    from sfvq_ext.interpret import render_codebook

    run, curve, adapter, generator = _open_run(args)
    out = Path(args.out) if args.out else run / "codebook.png"
    render_codebook(adapter, curve.codebook, out, columns=args.columns, batch_size=args.batch_size,
                    progress=not args.quiet, scale=_scale(args, adapter, curve))
    _write_record(out.with_suffix(".json"), {"command": "render", "run": str(run), "image": str(out),
                                              "codebook_size": curve.codebook_size, "columns": args.columns, **generator})
    print(f"wrote {out} ({curve.codebook_size} codebook vectors in curve order)")
    return 0


def _edit_direction(args: argparse.Namespace, curve, adapter, generator: dict) -> tuple[str, object]:
    """The direction to edit along: a curve segment, or a GANSpace / SeFa component
    (the baselines, computed on the same generator) for comparison."""
    import sfvq_ext
    from sfvq_ext.baselines import ganspace_directions, sefa_directions

    chosen = [name for name in ("segment", "ganspace", "sefa") if getattr(args, name) is not None]
    if len(chosen) != 1:
        raise ValueError("give exactly one of --segment I, --ganspace K, --sefa K")
    name, index = chosen[0], getattr(args, chosen[0])
    if name == "segment":
        _check_segment(curve, index)
        return f"seg{index}", sfvq_ext.directions(curve.codebook)[index].cpu()
    if index < 0:
        raise ValueError(f"--{name} must be a component index >= 0, got {index}")
    if name == "ganspace":
        dirs, _ = ganspace_directions(adapter.sample_latents(10_000, seed=12345, **_sampling_options(generator)),
                                      k=index + 1)
    else:
        if not hasattr(adapter, "G"):
            raise ValueError("--sefa needs a StyleGAN2 generator (its style-modulation weights)")
        dirs, _ = sefa_directions(adapter.G, k=index + 1)
    if index >= len(dirs):
        raise ValueError(f"--{name} {index}: only {len(dirs)} components exist")
    return f"{name}{index}", dirs[index]


def _edit(args: argparse.Namespace) -> int:
    """Edit sampled latents along one direction: RUN/edit_{seg I|ganspace K|sefa K}[_layersA-B].png (+ .json)."""
    from sfvq_ext.interpret import edit_grid

    run, curve, adapter, generator = _open_run(args)
    tag, direction = _edit_direction(args, curve, adapter, generator)
    layers = _parse_layers(args.layers)
    if layers is not None:
        adapter.layer_indices(layers, "--layers")
    latents = adapter.sample_latents(args.n, seed=args.seed, **_sampling_options(generator))
    suffix = f"_layers{layers.start}-{layers.stop - 1}" if layers is not None else ""
    out = Path(args.out) if args.out else run / f"edit_{tag}{suffix}.png"
    edit_grid(adapter, latents, direction, args.strengths, out, layers=layers, batch_size=args.batch_size,
              progress=not args.quiet, scale=_scale(args, adapter, curve))
    _write_record(out.with_suffix(".json"), {
        "command": "edit", "run": str(run), "image": str(out), "direction": tag, "segment": args.segment,
        "ganspace": args.ganspace, "sefa": args.sefa,
        "layers": None if layers is None else [layers.start, layers.stop - 1], "strengths": args.strengths,
        "latents": args.n, "seed": args.seed, "rows": "latents", "columns": "strengths", **generator})
    print(f"wrote {out} ({args.n} latents x {len(args.strengths)} strengths along {tag})")
    return 0


def _augment(args: argparse.Namespace) -> int:
    """N points along one curve segment, rendered: RUN/augment_seg{I}/ (+ augment.json)."""
    from sfvq_ext.interpret import augment_segment

    run, curve, adapter, generator = _open_run(args)
    _check_segment(curve, args.segment)
    if args.n < 1:
        raise ValueError(f"-n must be positive, got {args.n}")
    out = Path(args.out) if args.out else run / f"augment_seg{args.segment}"
    written = augment_segment(adapter, curve.codebook, args.segment, args.n, out, batch_size=args.batch_size,
                     progress=not args.quiet, scale=_scale(args, adapter, curve))
    _write_record(out / "augment.json", {"command": "augment", "run": str(run), "segment": args.segment,
                                         "n": args.n, **written, **generator})
    print(f"wrote {args.n} images along segment {args.segment} to {out}")
    return 0


def _load_probe(spec: str | None):
    """--probe MODULE:FACTORY: your module's zero-argument callable that returns the
    probe (a callable images -> (n, F) scores, optionally with .names / .groups)."""
    if spec is None:
        return None
    import importlib

    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"--probe must be MODULE:FACTORY, got {spec!r}")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"--probe {spec}: cannot import it: {err}") from err
    if not callable(factory):
        raise ValueError(f"--probe {spec}: not callable")
    probe = factory()
    if not callable(probe):
        raise ValueError(f"--probe {spec}: the factory returned a {type(probe).__name__}, not a callable probe")
    return probe


def _explore(args: argparse.Namespace) -> int:
    """A static page to look through the curve: RUN/explore/index.html (or --out)."""
    from sfvq_ext.explore import default_strength, write_explorer

    run, curve, adapter, generator = _open_run(args)
    for name in ("top", "frames", "latents"):
        if getattr(args, name) < (2 if name == "frames" else 1):
            raise ValueError(f"--{name} must be at least {2 if name == 'frames' else 1}, got {getattr(args, name)}")
    probe = _load_probe(args.probe)
    sampling = _sampling_options(generator)
    latents = adapter.sample_latents(args.latents, seed=args.seed, **sampling)
    out = Path(args.out) if args.out else run / "explore"
    page = write_explorer(adapter, curve.codebook.detach().cpu(), out, latents=latents,
                          strength=default_strength(adapter, **sampling), probe=probe, top=args.top,
                          max_frames=args.frames, batch_size=args.batch_size, progress=not args.quiet,
                          title=f"SFVQ curve explorer: {run}")
    _write_record(out / "explore_run.json", {"command": "explore", "run": str(run), "page": str(page),
                                             "top": args.top, "frames": args.frames, "latents": args.latents,
                                             "seed": args.seed, "probe": args.probe, **generator})
    print(f"wrote {page}: open it in a browser (no server needed)")
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Fit SFVQ on the shipped shape-world StyleGAN2 and write an HTML report."""
    from sfvq_ext.demo.report import run_demo

    page = run_demo(args.out, bits=args.bits, seed=args.seed, progress=not args.quiet)
    print(f"wrote {page}: open it in a browser")
    return 0


def _add_generator_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("generator")
    group.add_argument("--generator", default=None,
                       help="stylegan2:PATH (a rosinality .pt, or an NVlabs .pkl: StyleGAN2-ADA, StyleGAN3 or "
                       "TensorFlow-era StyleGAN2), stylegan3:PATH (NVlabs .pkl), biggan:DIR "
                       "(pytorch-pretrained-biggan directory) or demo (the shape-world StyleGAN2 this package ships)")
    group.add_argument("--nvlabs-code", default=None, help="your clone of NVlabs stylegan2-ada-pytorch or stylegan3 "
                       "(needed for .pkl files; TensorFlow-era pickles are converted by its legacy.py)")
    group.add_argument("--trust-pickle", action="store_true", help="allow full unpickling of a rosinality "
                       "checkpoint that stores its training arguments (runs code from the file)")
    group.add_argument("--class", dest="class_idx", type=int, default=None,
                       help="class index, for class-conditional generators only: conditional StyleGAN2-ADA / "
                       "StyleGAN3 pickles (the label the mapping network gets when latents are sampled; required "
                       "for them) and BigGAN (required; with --latent z the class is fixed for the run). "
                       "Unconditional StyleGAN2/3 refuse it")
    group.add_argument("--latent", choices=["z", "z+class"], default="z", help="BigGAN latent: z, or z and the class "
                       "embedding")
    group.add_argument("--truncation", type=float, default=None,
                       help="StyleGAN: truncation psi of sampled W latents towards w_avg (default 1: none); BigGAN: "
                       "scale of the sampled z and the truncation the generator renders with (default 0.4)")


def _add_run_command(commands, name: str, help_text: str, run):
    p = commands.add_parser(name, help=help_text)
    p.add_argument("run_dir", metavar="RUN", help="a directory written by `sfvq fit` (curve.safetensors, generator.json)")
    p.add_argument("--out", default=None, help="where to write (default: inside RUN)")
    p.add_argument("--batch-size", type=int, default=16, help="images rendered per batch")
    p.add_argument("--scale", type=int, default=None, help="enlarge images by pixel repetition "
                   "(default: tiles of at least 96 px)")
    p.add_argument("--device", default=None)
    p.add_argument("--quiet", action="store_true")
    _add_generator_options(p)
    p.set_defaults(run=run)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sfvq", description="Space-filling vector quantization tools")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="verify the install: correctness against the oracle, and speed")
    check.add_argument("--n", type=int, default=65536, help="number of input vectors")
    check.add_argument("--dim", type=int, default=512, help="vector width D")
    check.add_argument("--k", type=int, default=1024, help="codebook size K")
    check.set_defaults(run=_check)

    demo = commands.add_parser("demo", help="fit SFVQ on the shipped demo generator and write an HTML report")
    demo.add_argument("--out", default="sfvq-demo", help="output directory (default: sfvq-demo)")
    demo.add_argument("--bits", type=int, default=6)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(run=_demo)

    fit = commands.add_parser("fit", help="fit an SFVQ curve to vectors in a .npy file or a directory of .npy shards")
    fit.add_argument("source", nargs="?", default=None,
                     help=".npy file (N, D) or a directory of .npy shards, read memory-mapped (or use --generator)")
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
    fit.add_argument("--samples-per-epoch", type=int, default=65536,
                     help="with --generator: fresh latents per epoch (default 65536)")
    _add_generator_options(fit)
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

    render = _add_run_command(commands, "render", "render the codebook in curve order (codebook.png)", _render)
    render.add_argument("--columns", type=int, default=16, help="images per row")
    edit = _add_run_command(commands, "edit", "edit sampled latents along one curve segment (a grid PNG)", _edit)
    edit.add_argument("--segment", type=int, default=None, help="curve segment i: direction c_i -> c_{i+1}")
    edit.add_argument("--ganspace", type=int, default=None, help="baseline: GANSpace component K instead")
    edit.add_argument("--sefa", type=int, default=None, help="baseline: SeFa component K instead")
    edit.add_argument("--layers", default=None, help="W+ layers to edit, A-B inclusive (default: all)")
    edit.add_argument("--strengths", type=float, nargs="+", default=[-3.0, -1.5, 0.0, 1.5, 3.0])
    edit.add_argument("--n", type=int, default=4, help="latents (rows)")
    edit.add_argument("--seed", type=int, default=0, help="seed of the sampled latents")
    augment = _add_run_command(commands, "augment", "render N points along one curve segment", _augment)
    augment.add_argument("--segment", type=int, required=True)
    augment.add_argument("-n", type=int, default=8, help="points along the segment, ends included")
    explore = _add_run_command(commands, "explore", "write a static page to explore the curve: a slider along it, "
                               "the codebook strip, ranked segments with suggested layer ranges", _explore)
    explore.add_argument("--top", type=int, default=8, help="segments shown with edit grids (default 8)")
    explore.add_argument("--frames", type=int, default=256, help="most frames along the curve (default 256)")
    explore.add_argument("--latents", type=int, default=3, help="latents (grid rows, ranking edits)")
    explore.add_argument("--seed", type=int, default=0, help="seed of the sampled latents")
    explore.add_argument("--probe", default=None, help="MODULE:FACTORY, a zero-argument callable returning your "
                         "probe (images -> (n, F) scores); the page then shows which score each segment moves")
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, FileNotFoundError) as err:  # bad input: one line, not a traceback
        parser.exit(2, f"sfvq {args.command}: error: {' '.join(str(err).split())}\n")


if __name__ == "__main__":
    sys.exit(main())
