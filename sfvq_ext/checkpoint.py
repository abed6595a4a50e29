"""Saving and loading fitted curves and training checkpoints.

One ``.safetensors`` file holds the tensors (the codebook; for a training
checkpoint also the optimizer moments and usage counts) and, in its header
metadata, a small JSON document of settings, history and training progress.
Files are written atomically: to a temporary file in the same directory, synced,
then renamed over the target, so a crash never leaves a half-written checkpoint
and never damages the previous one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from .quantizer import SFVQ

__all__ = ["save", "load", "read_checkpoint", "write_checkpoint", "atomic_write_bytes", "FORMAT"]

FORMAT = "sfvq_ext.curve/1"
METADATA_KEY = "sfvq_ext"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone makes 0600 files


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor], info: dict) -> None:
    """Write ``tensors`` and the JSON-able ``info`` to ``path`` atomically."""
    info = {"format": FORMAT, **info}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    data = save_safetensors_bytes(tensors, metadata={METADATA_KEY: json.dumps(info)})
    atomic_write_bytes(Path(path), data)


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """``(tensors, info)`` of a file written by :func:`write_checkpoint`; a clear
    ``ValueError`` for a file that is truncated, corrupt or not ours."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    data = path.read_bytes()
    try:
        tensors = load_safetensors_bytes(data)
        header_len = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8 : 8 + header_len]).get("__metadata__") or {}
    except (SafetensorError, ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"checkpoint {path} is unreadable (truncated, corrupt, or not a safetensors file): {err}") from err
    if METADATA_KEY not in metadata:
        raise ValueError(f"checkpoint {path} is a safetensors file but was not written by sfvq_ext "
                         f"(no '{METADATA_KEY}' metadata)")
    try:
        info = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as err:
        raise ValueError(f"checkpoint {path}: its sfvq_ext metadata is not valid JSON: {err}") from err
    if info.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path} has format {info.get('format')!r}; this version reads {FORMAT!r}")
    codebook = tensors.get("codebook")
    module = info.get("module", {})
    if (codebook is None or codebook.dim() != 2 or codebook.shape[1] != module.get("dim")
            or codebook.shape[0] != module.get("codebook_size")):
        raise ValueError(f"checkpoint {path} is inconsistent: codebook {None if codebook is None else tuple(codebook.shape)} "
                         f"does not match its settings {module}")
    return tensors, info


def module_info(module: SFVQ) -> dict:
    """The module's settings as recorded in a file's metadata (the layout switches since issue 13)."""
    return {"dim": module.dim, "bits": module.bits, "codebook_size": module.current_codebook_size,
            "gradient": module.gradient, "start_bits": module.start_bits, "expand_eps": module.expand_eps,
            "dtype": str(module.weight.dtype).removeprefix("torch."),
            "accept_image_fmap": module.accept_image_fmap, "channel_last": module.channel_last,
            "grow_every": module.grow_every}


def module_from(tensors: dict[str, torch.Tensor], info: dict, device=None) -> SFVQ:
    """The :class:`SFVQ` a file describes (files written before the layout switches
    were recorded get the defaults)."""
    settings = info["module"]
    module = SFVQ(settings["dim"], settings["bits"], gradient=settings["gradient"], start_bits=settings["start_bits"],
                  expand_eps=settings["expand_eps"], dtype=getattr(torch, settings["dtype"]), device=device,
                  accept_image_fmap=settings.get("accept_image_fmap", False),
                  channel_last=settings.get("channel_last", True),
                  grow_every=settings.get("grow_every"))  # files before automatic growth: none
    module.set_codebook(tensors["codebook"])
    if "segment_counts" in tensors:
        module.segment_counts[: settings["codebook_size"] - 1] = tensors["segment_counts"].to(module.segment_counts)
    module.history = info.get("history", [])
    return module


def save(module: SFVQ, path: str | os.PathLike) -> None:
    """Save a fitted curve (codebook, settings, fit history) to ``path`` (.safetensors), atomically."""
    if not isinstance(module, SFVQ):
        raise TypeError(f"save: module must be an SFVQ, got {type(module).__name__}")
    if not module.initialized:
        raise ValueError("save: the module's codebook is not initialised; there is nothing to save")
    write_checkpoint(path, {"codebook": module.codebook, "segment_counts": module.segment_usage},
                     {"module": module_info(module), "history": module.history})


def load(path: str | os.PathLike, device=None) -> SFVQ:
    """The :class:`SFVQ` saved at ``path`` (a fitted curve or a training checkpoint), in eval mode."""
    tensors, info = read_checkpoint(path)
    try:
        return module_from(tensors, info, device=device).eval()
    except (TypeError, ValueError) as err:
        raise ValueError(f"checkpoint {path} does not hold a usable curve: {err}") from err
