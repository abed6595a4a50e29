"""StyleGAN2 through its W space: rosinality checkpoints (loaded into this
package's own generator), or any module with the NVlabs interface (NVlabs
pickles are loaded in :mod:`.nvlabs`)."""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import zipfile
from pathlib import Path

import torch
from torch import Tensor

from .base import GeneratorAdapter
from .stylegan2_arch import Generator


def _w_avg(G) -> Tensor | None:
    for owner in (G, getattr(G, "mapping", None)):
        value = getattr(owner, "w_avg", None)
        if isinstance(value, Tensor):
            return value
    return None


class StyleGAN2Adapter(GeneratorAdapter):
    """Any StyleGAN2/3 generator with the NVlabs interface: ``mapping(z, c,
    truncation_psi) -> ws``, ``synthesis(ws, noise_mode=, force_fp32=)``, ``num_ws``,
    ``z_dim`` and ``w_avg`` (on the module or its mapping network).

    Latents are W vectors (``latent_dim = w_dim``); ``num_layers = num_ws``.
    Truncation pulls w towards ``w_avg``; rendering uses constant noise, and
    float32 on CPU. ``code``: a context manager entered around every call into the
    generator (:func:`load_nvlabs` passes the modules of the clone the pickle was
    loaded with); ``None`` for generators that need nothing.
    """

    def __init__(self, G: torch.nn.Module, device=None, *, code=None):
        missing = [a for a in ("mapping", "synthesis", "num_ws", "z_dim") if not hasattr(G, a)]
        w_avg = _w_avg(G)
        if missing or w_avg is None:
            raise TypeError("StyleGAN2Adapter: the generator must have mapping, synthesis, num_ws, z_dim and "
                            f"w_avg (NVlabs interface); {type(G).__name__} lacks {missing or ['w_avg']}")
        self.device = torch.device(device) if device is not None else w_avg.device
        self.G = G.eval().requires_grad_(False).to(self.device)
        self.latent_dim, self.num_layers = int(w_avg.shape[0]), int(G.num_ws)
        self.z_dim, self.c_dim = int(G.z_dim), int(getattr(G, "c_dim", 0) or 0)
        # the modules the generator's code imports while it runs (an NVlabs clone's), if any
        self.code = code if code is not None else contextlib.nullcontext()

    def _labels(self, n: int, class_idx: int | None) -> Tensor | None:
        if self.c_dim == 0:
            if class_idx is not None:
                raise ValueError("sample_latents: this generator is unconditional; leave class_idx=None")
            return None
        if class_idx is None or not 0 <= class_idx < self.c_dim:
            raise ValueError(f"sample_latents: this generator is conditional: class_idx must be in [0, {self.c_dim - 1}], "
                             f"got {class_idx!r}")
        c = torch.zeros(n, self.c_dim, device=self.device)
        c[:, class_idx] = 1
        return c

    @torch.no_grad()
    def map(self, z: Tensor, *, truncation: float = 1.0, class_idx: int | None = None) -> Tensor:
        """W vectors for prior samples ``z`` (n, z_dim)."""
        with self.code:
            ws = self.G.mapping(z.to(self.device, torch.float32), self._labels(len(z), class_idx),
                                truncation_psi=truncation)
        return ws[:, 0] if ws.dim() == 3 else ws

    def sample_latents(self, n: int, *, seed: int = 0, truncation: float = 1.0, class_idx: int | None = None) -> Tensor:
        z = torch.randn(n, self.z_dim, generator=torch.Generator().manual_seed(seed))
        return self.map(z, truncation=truncation, class_idx=class_idx).float().cpu()

    def latent_sampler(self, *, truncation: float = 1.0, class_idx: int | None = None):
        """A ``sampler(n, generator)`` for :func:`sfvq_ext.fit`: fresh W latents per batch."""
        def sampler(n: int, generator: torch.Generator) -> Tensor:
            return self.map(torch.randn(n, self.z_dim, generator=generator), truncation=truncation, class_idx=class_idx)
        return sampler

    def _render_batch(self, latents: Tensor) -> Tensor:
        ws = latents[:, None].expand(-1, self.num_layers, -1) if latents.dim() == 2 else latents
        with self.code:
            return self.G.synthesis(ws, noise_mode="const", force_fp32=self.device.type == "cpu")


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"global {module}.{name}")


def is_torch_file(path: Path) -> bool:
    """Whether ``path`` is in one of ``torch.save``'s formats: a zip archive holding
    ``data.pkl`` (the default since torch 1.6), or the legacy format, a pickle stream
    that starts with torch's magic number. Reads only the header; runs no code."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("data.pkl") for name in archive.namelist())
    with open(path, "rb") as f:
        head = f.read(64)  # the magic number pickles to ~20 bytes (plus a frame header from protocol 4)
    try:
        return _NoGlobals(io.BytesIO(head)).load() == torch.serialization.MAGIC_NUMBER
    except Exception:
        return False


def load_rosinality(path: str | os.PathLike, *, device=None, trust_pickle: bool = False) -> StyleGAN2Adapter:
    """A rosinality ``stylegan2-pytorch`` checkpoint (``.pt`` with ``g_ema`` and
    ``latent_avg``, or a bare ``g_ema`` state dict) in this package's generator.

    The file is read with ``torch.load(weights_only=True)``. Checkpoints that also
    store training arguments (an ``argparse.Namespace``) need full unpickling, which
    can run code from the file: that happens only with ``trust_pickle=True``.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the
    file for everything else: not a PyTorch checkpoint at all (checked before any
    unpickling, so also with ``trust_pickle=True``), not a dict, not the rosinality
    layout, or a parameter of the wrong shape (named, with both shapes).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"load_rosinality: {path} does not exist")
    if not is_torch_file(path):
        raise ValueError(f"load_rosinality: {path} is not a PyTorch checkpoint (neither the zip archive nor the "
                         "legacy format that torch.save writes)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not trust_pickle:
            raise ValueError(f"load_rosinality: {path} holds more than tensors (e.g. the training arguments), "
                             "which only full unpickling can read; unpickling can run code from the file. "
                             "If you trust it, pass trust_pickle=True.") from err
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err2:
            raise ValueError(f"load_rosinality: cannot read {path} as a PyTorch checkpoint: "
                             f"{type(err2).__name__}: {err2}") from err2
    except Exception as err:
        raise ValueError(f"load_rosinality: cannot read {path} as a PyTorch checkpoint: "
                         f"{type(err).__name__}: {err}") from err
    if not isinstance(ckpt, dict):
        raise ValueError(f"load_rosinality: {path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    state = ckpt.get("g_ema", ckpt)
    if not isinstance(state, dict):
        raise ValueError(f"load_rosinality: {path}: 'g_ema' is a {type(state).__name__}, not a state dict")
    try:
        G = Generator.from_state_dict(state)
    except ValueError as err:
        raise ValueError(f"load_rosinality: {path}: {err}") from err
    latent_avg = ckpt.get("latent_avg")
    if isinstance(latent_avg, Tensor) and latent_avg.numel() != G.style_dim:
        raise ValueError(f"load_rosinality: {path}: latent_avg has shape {tuple(latent_avg.shape)}, but the "
                         f"generator's W has width {G.style_dim}")
    G.set_w_avg(latent_avg if isinstance(latent_avg, Tensor) else None)
    return StyleGAN2Adapter(G, device=device)


def save_rosinality(G: Generator, path: str | os.PathLike) -> None:
    """Write ``G`` as a rosinality-layout checkpoint (``g_ema`` + ``latent_avg``)."""
    torch.save({"g_ema": G.state_dict(), "latent_avg": G.w_avg.clone()}, path)
