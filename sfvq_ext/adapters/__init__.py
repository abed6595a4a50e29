"""Generators seen through their latent spaces, for the interpretation tools.

Adapters load files the user already has (nothing is downloaded):
:func:`load_rosinality` (rosinality ``.pt``, into this package's own StyleGAN2
generator), :func:`load_nvlabs` (NVlabs StyleGAN2-ADA / StyleGAN3 pickles, and
TensorFlow-era StyleGAN2 pickles through the clone's ``legacy.py``, each run with
the user's clone of their code), :class:`StyleGAN2Adapter` (any module with the NVlabs interface) and
:class:`CallableAdapter` (bring your own sample/render callables) and
:func:`load_biggan` (pytorch-pretrained-biggan, from a local directory).
"""

from .base import GeneratorAdapter
from .biggan import BigGANAdapter, load_biggan
from .callable import CallableAdapter
from .nvlabs import NVlabsCode, load_nvlabs
from .stylegan2 import StyleGAN2Adapter, load_rosinality, save_rosinality
from .stylegan2_arch import Generator as StyleGAN2Generator

__all__ = ["GeneratorAdapter", "BigGANAdapter", "load_biggan", "StyleGAN2Adapter", "CallableAdapter", "StyleGAN2Generator",
           "load_rosinality", "save_rosinality", "load_nvlabs", "NVlabsCode", "open_generator"]


def open_generator(spec: str, *, nvlabs_code=None, trust_pickle: bool = False, class_idx: int | None = None,
                   latent: str = "z", truncation: float | None = None, device=None) -> GeneratorAdapter:
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
