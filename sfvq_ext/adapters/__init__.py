"""Generators seen through their latent spaces, for the interpretation tools.

Adapters load files the user already has (nothing is downloaded):
:func:`load_rosinality` (rosinality ``.pt``, into this package's own StyleGAN2
generator), :func:`load_nvlabs` (NVlabs pickles, with the user's clone of their
code), :class:`StyleGAN2Adapter` (any module with the NVlabs interface) and
:class:`CallableAdapter` (bring your own sample/render callables).
"""

from .base import GeneratorAdapter
from .callable import CallableAdapter
from .stylegan2 import StyleGAN2Adapter, load_nvlabs, load_rosinality, save_rosinality
from .stylegan2_arch import Generator as StyleGAN2Generator

__all__ = ["GeneratorAdapter", "StyleGAN2Adapter", "CallableAdapter", "StyleGAN2Generator", "load_rosinality",
           "save_rosinality", "load_nvlabs"]
