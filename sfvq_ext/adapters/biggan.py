"""BigGAN through ``pytorch-pretrained-biggan``, loaded from a local directory."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from .base import GeneratorAdapter

LATENT_KINDS = ("z", "z+class")


class BigGANAdapter(GeneratorAdapter):
    """A class-conditional BigGAN seen through its noise space, for one class.

    ``latent="z"``: latents are the noise vectors z (``z_dim``), rendered with the
    fixed class ``class_idx``; ``latent="z+class"``: latents are z concatenated with
    the class embedding (``z_dim + embed_dim``), so a curve can also move between
    classes.

    ``truncation`` (0, 1] scales the truncated-normal z samples (as the package's
    ``truncated_noise_sample`` does) *and* selects the generator's batch-norm
    statistics when rendering, so latents drawn with one value only render
    correctly with that value. It is therefore fixed for the adapter:
    ``sample_latents`` / ``latent_sampler`` accept ``truncation`` only when it
    equals the adapter's (``ValueError`` otherwise); :meth:`with_truncation` gives
    an adapter for another value, sharing the model.
    """

    def __init__(self, model: torch.nn.Module, class_idx: int, *, latent: str = "z", truncation: float = 0.4,
                 device=None):
        if latent not in LATENT_KINDS:
            raise ValueError(f"BigGANAdapter: latent must be one of {LATENT_KINDS}, got {latent!r}")
        config = model.config
        if not 0 <= class_idx < config.num_classes:
            raise ValueError(f"BigGANAdapter: class_idx must be in [0, {config.num_classes - 1}], got {class_idx}")
        if not isinstance(truncation, (int, float)) or not 0 < truncation <= 1:
            raise ValueError(f"BigGANAdapter: truncation must be a number in (0, 1], got {truncation!r}")
        self.device = torch.device(device or "cpu")
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.class_idx, self.latent, self.truncation = class_idx, latent, truncation
        self.z_dim = config.z_dim
        self.latent_dim = config.z_dim + (model.embeddings.out_features if latent == "z+class" else 0)
        self.num_layers = 1

    def with_truncation(self, truncation: float) -> "BigGANAdapter":
        """The same model, class and latent kind with another truncation (for
        sampling and rendering alike)."""
        return BigGANAdapter(self.model, self.class_idx, latent=self.latent, truncation=truncation, device=self.device)

    def _check_truncation(self, truncation: float | None, where: str) -> None:
        if truncation is not None and truncation != self.truncation:
            raise ValueError(f"{where}: truncation={truncation} differs from the adapter's {self.truncation}, which "
                             "rendering uses (BigGAN picks its batch-norm statistics by the truncation value); "
                             f"use adapter.with_truncation({truncation}) or load_biggan(..., truncation={truncation})")

    def _one_hot(self, n: int, class_idx: int) -> Tensor:
        c = torch.zeros(n, self.model.config.num_classes, device=self.device)
        c[:, class_idx] = 1
        return c

    def _latents_from_z(self, z: Tensor, class_idx: int | None) -> Tensor:
        z = z.to(self.device, torch.float32)
        if self.latent == "z":
            if class_idx not in (None, self.class_idx):
                raise ValueError("sample_latents: with latent='z' the class is fixed by the adapter "
                                 f"(class_idx={self.class_idx}); use latent='z+class' to mix classes")
            return z
        with torch.no_grad():
            embed = self.model.embeddings(self._one_hot(len(z), self.class_idx if class_idx is None else class_idx))
        return torch.cat([z, embed], dim=1)

    def sample_latents(self, n: int, *, seed: int = 0, truncation: float | None = None,
                       class_idx: int | None = None) -> Tensor:
        """``n`` latents: z from ``truncated_noise_sample(n, z_dim, self.truncation,
        seed=seed)`` (float32), with the class embedding appended for ``latent="z+class"``.
        ``truncation`` may be omitted or must equal the adapter's (``ValueError``)."""
        from pytorch_pretrained_biggan import truncated_noise_sample

        self._check_truncation(truncation, "sample_latents")
        z = torch.from_numpy(truncated_noise_sample(n, self.z_dim, self.truncation, seed=seed))
        return self._latents_from_z(z, class_idx).cpu()

    def latent_sampler(self, *, truncation: float | None = None, class_idx: int | None = None):
        """A ``sampler(n, generator)`` for :func:`sfvq_ext.fit`: fresh latents per batch
        (z from a normal truncated to [-2, 2], scaled by the adapter's truncation;
        ``truncation`` may be omitted or must equal it)."""
        self._check_truncation(truncation, "latent_sampler")
        scale = self.truncation

        def sampler(n: int, generator: torch.Generator) -> Tensor:
            z = torch.nn.init.trunc_normal_(torch.empty(n, self.z_dim), a=-2.0, b=2.0, generator=generator) * scale
            return self._latents_from_z(z, class_idx)
        return sampler

    def _render_batch(self, latents: Tensor) -> Tensor:
        if self.latent == "z":
            return self.model(latents, self._one_hot(len(latents), self.class_idx), self.truncation)
        return self.model.generator(latents, self.truncation)  # z and embedding already concatenated


def load_biggan(model_dir: str | os.PathLike, class_idx: int, *, latent: str = "z", truncation: float = 0.4,
                device=None) -> BigGANAdapter:
    """BigGAN from a local directory holding ``config.json`` and ``pytorch_model.bin``
    (as ``BigGAN.from_pretrained`` writes and reads them). Nothing is downloaded.
    ``truncation`` is fixed for the adapter (see :class:`BigGANAdapter`).

    Raises ``FileNotFoundError`` when a file is missing and ``ValueError`` when the
    weights do not load or are not a BigGAN of the configured shape."""
    from pytorch_pretrained_biggan import BigGAN
    from pytorch_pretrained_biggan.model import CONFIG_NAME, WEIGHTS_NAME

    model_dir = Path(model_dir).expanduser()
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (model_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"load_biggan: {model_dir} must be a directory holding {CONFIG_NAME} and "
                                f"{WEIGHTS_NAME}; missing {', '.join(missing)}")
    try:
        state = torch.load(model_dir / WEIGHTS_NAME, map_location="cpu", weights_only=True)
        model = BigGAN.from_pretrained(str(model_dir))
    except Exception as err:
        raise ValueError(f"load_biggan: cannot load a BigGAN from {model_dir}: {err}") from err
    # from_pretrained loads non-strictly: make sure the file really is this BigGAN
    expected = set(model.state_dict())
    if not isinstance(state, dict) or set(state) != expected:
        have = set(state) if isinstance(state, dict) else set()
        raise ValueError(f"load_biggan: {model_dir / WEIGHTS_NAME} is not a BigGAN of the shape in {CONFIG_NAME} "
                         f"(missing {sorted(expected - have)[:3]}, unexpected {sorted(have - expected)[:3]})")
    return BigGANAdapter(model, class_idx, latent=latent, truncation=truncation, device=device)
