"""Commands on a fitted run that render through its generator: ``sfvq render``,
``edit``, ``augment``, ``atlas`` and ``explore``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import write_record
from .generators import GENERATOR_FILE, add_generator_options, generator_options, open_generator, sampling_options


def _open_run(args: argparse.Namespace):
    """RUN, its fitted curve, its generator's adapter (from RUN/generator.json, or --generator) and
    the generator's spec and options as one record ({"generator": spec, ...})."""
    import sfvq_ext

    run = Path(args.run_dir)
    curve = sfvq_ext.load(run / "curve.safetensors", device=args.device)
    if args.generator is not None:
        spec, options = args.generator, generator_options(args)
    elif (run / GENERATOR_FILE).is_file():
        saved = json.loads((run / GENERATOR_FILE).read_text())
        spec, options = saved.pop("spec"), saved
    else:
        raise ValueError(f"{run} was not fitted on a generator (no {GENERATOR_FILE}); name one with --generator SPEC")
    adapter = open_generator(spec, device=args.device, **options)
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
    if not 0 <= segment <= curve.current_codebook_size - 2:
        raise ValueError(f"--segment must be in [0, {curve.current_codebook_size - 2}], got {segment}")


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
    write_record(out.with_suffix(".json"), {"command": "render", "run": str(run), "image": str(out),
                                              "codebook_size": curve.current_codebook_size, "columns": args.columns, **generator})
    print(f"wrote {out} ({curve.current_codebook_size} codebook vectors in curve order)")
    return 0


def _edit_direction(args: argparse.Namespace, curve, adapter, generator: dict) -> tuple[str, object]:
    """The direction to edit along: a curve segment, or a GANSpace / SeFa component
    (the baselines, computed on the same generator) for comparison."""
    import sfvq_ext
    from sfvq_ext.interpret import ganspace_directions, sefa_directions

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
        dirs, _ = ganspace_directions(adapter.sample_latents(10_000, seed=12345, **sampling_options(generator)),
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
    latents = adapter.sample_latents(args.n, seed=args.seed, **sampling_options(generator))
    suffix = f"_layers{layers.start}-{layers.stop - 1}" if layers is not None else ""
    out = Path(args.out) if args.out else run / f"edit_{tag}{suffix}.png"
    edit_grid(adapter, latents, direction, args.strengths, out, layers=layers, batch_size=args.batch_size,
              progress=not args.quiet, scale=_scale(args, adapter, curve))
    write_record(out.with_suffix(".json"), {
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
    write_record(out / "augment.json", {"command": "augment", "run": str(run), "segment": args.segment,
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
    import os
    import sys

    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does: a probe module in the current directory is found
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
    sampling = sampling_options(generator)
    latents = adapter.sample_latents(args.latents, seed=args.seed, **sampling)
    out = Path(args.out) if args.out else run / "explore"
    page = write_explorer(adapter, curve.codebook.detach().cpu(), out, latents=latents,
                          strength=default_strength(adapter, **sampling), probe=probe, top=args.top,
                          max_frames=args.frames, batch_size=args.batch_size, progress=not args.quiet,
                          title=f"SFVQ curve explorer: {run}")
    write_record(out / "explore_run.json", {"command": "explore", "run": str(run), "page": str(page),
                                             "top": args.top, "frames": args.frames, "latents": args.latents,
                                             "seed": args.seed, "probe": args.probe, **generator})
    print(f"wrote {page}: open it in a browser (no server needed)")
    return 0


def _atlas(args: argparse.Namespace) -> int:
    """The panoptic atlas: every probe score along the curve, under the codebook strip: RUN/atlas.png
    (+ atlas.json: the scores, their names and panoptic scores)."""
    from sfvq_ext.interpret import draw_atlas, factor_tracks

    run, curve, adapter, generator = _open_run(args)
    probe = _load_probe(args.probe)
    codebook = curve.codebook.detach()
    images = adapter.render(codebook, batch_size=args.batch_size, progress=not args.quiet)
    tracks = factor_tracks(adapter, codebook, probe, images=images, batch_size=args.batch_size, progress=False)
    out = Path(args.out) if args.out else run / "atlas.png"
    draw_atlas(tracks, images, out, title=f"panoptic atlas: {run}")
    write_record(out.with_suffix(".json"), {
        "command": "atlas", "run": str(run), "image": str(out), "probe": args.probe, "names": tracks.names,
        "panoptic": tracks.panoptic_by_name(), "scores": tracks.scores.tolist(), **generator})
    best = tracks.most_ordered()[:1]
    print(f"wrote {out} ({len(tracks.names)} tracks over {len(codebook)} codebook vectors"
          + "".join(f"; most ordered: {n}, panoptic score {v:.2f}" for n, v in best) + ")")
    return 0


def _add_run_command(commands, name: str, help_text: str, run):
    p = commands.add_parser(name, help=help_text)
    p.add_argument("run_dir", metavar="RUN", help="a directory written by `sfvq fit` (curve.safetensors, generator.json)")
    p.add_argument("--out", default=None, help="where to write (default: inside RUN)")
    p.add_argument("--batch-size", type=int, default=16, help="images rendered per batch")
    p.add_argument("--scale", type=int, default=None, help="enlarge images by pixel repetition "
                   "(default: tiles of at least 96 px)")
    p.add_argument("--device", default=None)
    p.add_argument("--quiet", action="store_true")
    add_generator_options(p)
    p.set_defaults(run=run)
    return p


def add_commands(commands) -> None:
    """Register ``render``, ``edit``, ``augment``, ``atlas`` and ``explore`` on the subparsers ``commands``."""
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
    atlas = _add_run_command(commands, "atlas", "the panoptic atlas: every probe score along the curve, under the "
                             "codebook strip (atlas.png, atlas.json)", _atlas)
    atlas.add_argument("--probe", required=True, help="MODULE:FACTORY, a zero-argument callable returning your probe "
                       "(images -> (n, F) scores, optionally with .names); for the demo generator: "
                       "sfvq_ext.demo.measure:factor_probe")
    explore = _add_run_command(commands, "explore", "write a static page to explore the curve: a slider along it, "
                               "the codebook strip, ranked segments with suggested layer ranges", _explore)
    explore.add_argument("--top", type=int, default=8, help="segments shown with edit grids (default 8)")
    explore.add_argument("--frames", type=int, default=256, help="most frames along the curve (default 256)")
    explore.add_argument("--latents", type=int, default=3, help="latents (grid rows, ranking edits)")
    explore.add_argument("--seed", type=int, default=0, help="seed of the sampled latents")
    explore.add_argument("--probe", default=None, help="MODULE:FACTORY, a zero-argument callable returning your "
                         "probe (images -> (n, F) scores); the page then shows which score each segment moves")
