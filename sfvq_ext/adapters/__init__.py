"""Generators seen through their latent spaces, for the interpretation tools.

Adapters load files the user already has (nothing is downloaded):
:func:`load_rosinality` (rosinality ``.pt``, into this package's own StyleGAN2
generator), :func:`load_nvlabs` (NVlabs pickles, with the user's clone of their
code), :class:`StyleGAN2Adapter` (any module with the NVlabs interface) and
:class:`CallableAdapter` (bring your own sample/render callables) and
:func:`load_biggan` (pytorch-pretrained-biggan, from a local directory).
"""

from .base import GeneratorAdapter
from .biggan import BigGANAdapter, load_biggan
from .callable import CallableAdapter
from .stylegan2 import StyleGAN2Adapter, load_nvlabs, load_rosinality, save_rosinality
from .stylegan2_arch import Generator as StyleGAN2Generator

__all__ = ["GeneratorAdapter", "BigGANAdapter", "load_biggan", "StyleGAN2Adapter", "CallableAdapter", "StyleGAN2Generator", "load_rosinality",
           "save_rosinality", "load_nvlabs", "open_generator"]


def open_generator(spec: str, *, nvlabs_code=None, trust_pickle: bool = False, class_idx: int | None = None,
                   latent: str = "z", truncation: float | None = None, device=None) -> GeneratorAdapter:
    """An adapter from a command-line style spec:

    * ``stylegan2:PATH`` -- a rosinality ``.pt`` checkpoint, or an NVlabs ``.pkl``
      (then ``nvlabs_code`` names the clone of their code);
    * ``biggan:DIR`` -- a pytorch-pretrained-biggan directory (``class_idx`` required).
    """
    kind, _, location = spec.partition(":")
    if kind == "stylegan2" and location:
        if location.endswith(".pkl"):
            if nvlabs_code is None:
                raise ValueError(f"generator {spec}: an NVlabs pickle needs the NVlabs code (--nvlabs-code DIR)")
            return load_nvlabs(location, nvlabs_code, device=device)
        return load_rosinality(location, device=device, trust_pickle=trust_pickle)
    if kind == "biggan" and location:
        if class_idx is None:
            raise ValueError(f"generator {spec}: BigGAN latents are per class: give class_idx (--class)")
        return load_biggan(location, class_idx, latent=latent, truncation=0.4 if truncation is None else truncation,
                           device=device)
    raise ValueError(f"generator spec must be stylegan2:PATH or biggan:DIR, got {spec!r}")
