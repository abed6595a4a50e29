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
           "load_rosinality", "save_rosinality", "load_nvlabs", "NVlabsCode"]
