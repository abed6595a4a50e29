"""``sfvq fit``: fit a curve to vectors in .npy files, or to a generator's latents."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from . import write_record
from .generators import GENERATOR_FILE, add_generator_options, generator_options, open_generator, sampling_options

# Training settings a preset gives; each is passed to sfvq_ext.fit only when given.
OVERRIDES = ("epochs", "batch_size", "lr")


def run_fit(args: argparse.Namespace) -> int:
    """Fit a curve to a .npy file or shard directory, or to latents a generator
    samples on the fly (--generator); write the curve, a checkpoint, fit.json
    (settings, training time, per-stage history) and fit.png into --out."""
    import torch

    import sfvq_ext
    from sfvq_ext.data import SamplerSource, as_source, draw
    from sfvq_ext.fit_report import plot_fit

    started = time.perf_counter()
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
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
        options = generator_options(args)
        adapter = open_generator(args.generator, device=args.device, **options)
        if options["truncation"] is None and hasattr(adapter, "truncation"):
            options["truncation"] = adapter.truncation  # BigGAN: record the value it renders with
        source = SamplerSource(adapter.latent_sampler(**sampling_options(options)), dim=adapter.latent_dim)
        samples_per_epoch = args.samples_per_epoch
    else:
        source = as_source(args.source)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    overrides = {name: getattr(args, name) for name in OVERRIDES if getattr(args, name) is not None}
    try:
        if args.generator is not None:  # render/edit/augment on this run use the same generator
            write_record(out / GENERATOR_FILE, {"spec": args.generator, **options})
        module = sfvq_ext.fit(source, args.bits, preset=args.preset, **overrides, seed=args.seed, device=args.device,
                              checkpoint=checkpoint, resume=checkpoint if args.resume else None,
                              checkpoint_every=args.checkpoint_every, samples_per_epoch=samples_per_epoch,
                              progress=not args.quiet)
    except BaseException:
        # a run that failed before its first checkpoint leaves no --out behind; once a
        # checkpoint exists it is kept, for --resume
        if created and not checkpoint.exists():
            shutil.rmtree(out, ignore_errors=True)
        raise
    sfvq_ext.save(module, out / "curve.safetensors")
    # epochs / batch_size / lr: as given (None: the preset's); "settings": what fit used.
    # "seconds": training time over all runs of a resumed fit (each stage's time is kept in
    # the checkpoint); "seconds_this_run": this command's wall time up to here.
    summary = {"source": str(args.source or args.generator), "bits": args.bits, "preset": args.preset,
               **{name: getattr(args, name) for name in OVERRIDES}, "seed": args.seed,
               "seconds": sum(stage["seconds"] for stage in module.history),
               "seconds_this_run": time.perf_counter() - started}
    settings = getattr(module, "fit_settings", None)
    if settings is not None:
        summary["settings"] = settings
    summary["history"] = module.history
    write_record(out / "fit.json", summary)
    plot_fit(module, draw(source, 5000, torch.Generator().manual_seed(0)), out / "fit.png")
    last = module.history[-1]
    print(f"curve of {module.current_codebook_size} vectors: exact-projection MSE {last['projection_mse']:.5g}, "
          f"perplexity {last['perplexity']:.1f}; wrote {out}/curve.safetensors, fit.json, fit.png")
    return 0


def add_commands(commands) -> None:
    """Register ``fit`` on the subparsers ``commands``."""
    fit = commands.add_parser("fit", help="fit an SFVQ curve to vectors in a .npy file or a directory of .npy shards")
    fit.add_argument("source", nargs="?", default=None,
                     help=".npy file (N, D) or a directory of .npy shards, read memory-mapped (or use --generator)")
    fit.add_argument("--bits", type=int, required=True, help="curve of 2**bits vectors")
    fit.add_argument("--out", required=True, help="output directory")
    fit.add_argument("--preset", choices=["default", "authors"], default="default",
                     help="training settings to start from: default (this package's) or authors (those of the "
                     "original SFVQ code); --epochs, --batch-size and --lr override single settings "
                     "(default: default)")
    fit.add_argument("--epochs", type=int, default=None, help="epochs per stage (default: the preset's)")
    fit.add_argument("--batch-size", type=int, default=None, help="vectors per step (default: the preset's)")
    fit.add_argument("--lr", type=float, default=None, help="learning rate (default: the preset's)")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--device", default=None, help="cpu (default), cuda, cuda:1, ...")
    fit.add_argument("--checkpoint-every", type=int, default=None, help="also checkpoint every N steps")
    fit.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    fit.add_argument("--force", action="store_true", help="start over even if --out holds a run")
    fit.add_argument("--quiet", action="store_true", help="no progress bars")
    fit.add_argument("--samples-per-epoch", type=int, default=65536,
                     help="with --generator: fresh latents per epoch (default 65536)")
    add_generator_options(fit)
    fit.set_defaults(run=run_fit)
