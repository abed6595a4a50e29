"""What the package ships to show SFVQ at work without any download: a procedural
shape world with known factors (:mod:`.world`), a small StyleGAN2 trained on it
(:func:`load_generator`), a probe that reads the factors back from images
(:func:`load_probe`), and ``sfvq demo`` (:mod:`.report`)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

WEIGHTS = Path(__file__).with_name("shapes_stylegan2.safetensors")


def load_generator(path: str | Path | None = None, device=None):
    """The shipped shape-world StyleGAN2 (or the one at ``path``) as a :class:`~sfvq_ext.adapters.StyleGAN2Adapter`."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from ..adapters import StyleGAN2Adapter
    from ..adapters.stylegan2_arch import Generator

    path = Path(path or WEIGHTS)
    if not path.is_file():
        raise FileNotFoundError(f"load_generator: {path} does not exist (train one: python -m sfvq_ext.demo.train_gan)")
    with safe_open(str(path), "pt") as f:
        info = json.loads(f.metadata()["sfvq_ext.generator"])
    tensors = load_file(str(path))
    G = Generator(info["size"], style_dim=info["style_dim"], n_mlp=info["n_mlp"],
                  channels={int(k): v for k, v in info["channels"].items()})
    w_avg = tensors.pop("w_avg")
    G.load_state_dict({k: v.float() for k, v in tensors.items()})
    G.set_w_avg(w_avg)
    G.training_info = info
    return StyleGAN2Adapter(G, device=device)


def load_probe(path: str | Path | None = None, device=None):
    """The shipped factor probe (:class:`.probe.FactorProbe`), or the one at ``path``."""
    from .probe import WEIGHTS as PROBE_WEIGHTS
    from .probe import load_probe as _load

    path = Path(path or PROBE_WEIGHTS)
    if not path.is_file():
        raise FileNotFoundError(f"load_probe: {path} does not exist (train one: python -m sfvq_ext.demo.probe)")
    return _load(path).to(device or "cpu")
