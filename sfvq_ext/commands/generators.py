"""Generators on the command line: the --generator options shared by ``sfvq fit`` and the
commands that render a run, and :func:`open_generator`, which turns a spec into an adapter."""

from __future__ import annotations

import argparse

# A run fitted on a generator records it here, so render/edit/augment/explore reopen it.
GENERATOR_FILE = "generator.json"


def add_generator_options(parser: argparse.ArgumentParser) -> None:
    """--generator SPEC and the options that open it, as one help group."""
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


def generator_options(args: argparse.Namespace) -> dict:
    """The generator options as given on the command line (recorded in generator.json)."""
    return {"nvlabs_code": args.nvlabs_code, "trust_pickle": args.trust_pickle, "class_idx": args.class_idx,
            "latent": args.latent, "truncation": args.truncation}


def sampling_options(options: dict) -> dict:
    """truncation / class_idx for sample_latents and latent_sampler, where given."""
    return {k: options[k] for k in ("truncation", "class_idx") if options.get(k) is not None}


def open_generator(spec: str, *, nvlabs_code=None, trust_pickle: bool = False, class_idx: int | None = None,
                   latent: str = "z", truncation: float | None = None, device=None):
    """An adapter from a command-line style spec:

    * ``stylegan2:PATH`` -- a rosinality ``.pt`` checkpoint, or an NVlabs pickle
      (``.pkl``: StyleGAN2-ADA, StyleGAN3 or TensorFlow-era StyleGAN2; then
      ``nvlabs_code`` names the clone of their code); ``stylegan3:PATH`` -- an NVlabs
      pickle, the same way;
    * ``biggan:DIR`` -- a pytorch-pretrained-biggan directory (``class_idx`` required;
      ``truncation`` defaults to 0.4 and is fixed for the adapter's lifetime);
    * ``demo`` -- the shape-world StyleGAN2 this package ships (``demo:PATH``: weights
      written by ``python -m sfvq_ext.demo.train_gan``), no download.

    ``class_idx`` of a conditional StyleGAN2-ADA / StyleGAN3 model is given when
    sampling (``sample_latents``, ``latent_sampler``), not here. Raises
    ``ValueError`` for a malformed spec or missing option, and whatever the loader
    raises for the file.
    """
    from ..adapters import load_biggan, load_nvlabs, load_rosinality  # only now: the adapters are heavy

    kind, _, location = spec.partition(":")
    if kind in ("stylegan2", "stylegan3") and location:
        if kind == "stylegan3" or location.endswith((".pkl", ".pickle")):
            if nvlabs_code is None:
                raise ValueError(f"generator {spec}: an NVlabs pickle needs the NVlabs code (--nvlabs-code DIR)")
            return load_nvlabs(location, nvlabs_code, device=device)
        return load_rosinality(location, device=device, trust_pickle=trust_pickle)
    if kind == "biggan" and location:
        if class_idx is None:
            raise ValueError(f"generator {spec}: BigGAN latents are per class: give class_idx (--class)")
        return load_biggan(location, class_idx, latent=latent, truncation=0.4 if truncation is None else truncation,
                           device=device)
    if kind == "demo":
        from ..demo import load_generator

        return load_generator(location or None, device=device)
    raise ValueError(f"generator spec must be stylegan2:PATH, stylegan3:PATH, biggan:DIR or demo, got {spec!r}")
