"""The SFVQ fitting recipe: start from 4 norm-quartile means, train, double the
curve, train again, ... up to ``2**bits`` vectors.

Every stage trains with a fresh Adam whose learning rate is halved at 60% and
80% of the stage (the original authors' recipe). All randomness (data order,
dither, samples) is drawn from generators seeded by ``(seed, stage, step)``, so a
fit is reproducible and a killed fit resumed from its last checkpoint ends with
the same curve as an uninterrupted one. Under ``torch.distributed`` each rank
reads its share of every batch and the gradients are summed across ranks, so the
result equals the single-process fit up to float rounding. Usage counts are summed
across ranks too (every rank holds the global counts), as in an
``SFVQ(..., sync_codebook=True)`` under ``DistributedDataParallel``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from tqdm.auto import tqdm

from . import ops
from .checkpoint import module_from, module_info, read_checkpoint, write_checkpoint
from .data import VectorSource, as_source, draw
from .quantizer import SFVQ

__all__ = ["fit", "learning_rate_at"]

START_BITS = 2


def learning_rate_at(step: int, total: int, lr: float, milestones=(0.6, 0.8), gamma: float = 0.5) -> float:
    """The stage's learning rate at ``step`` of ``total``: ``lr`` times ``gamma`` per milestone passed."""
    passed = sum(step >= round(m * total) for m in milestones)
    return lr * gamma**passed


def squared_error_and_grad(x: Tensor, codebook: Tensor, dither: Tensor, divisor: float) -> tuple[Tensor, Tensor, Tensor]:
    """One training step's dithered quantization of ``x``: the squared error (a scalar), the
    gradient of error / ``divisor`` with respect to ``codebook``, and the segment of each row.

    The gradient is taken by hand, d/dq then the op's own backward onto the codebook: the
    same as autograd's, at half the step time when batches are small."""
    with torch.no_grad():
        q, segment = ops.dithered_quantize(x, codebook, dither)
        residual = q - x
        grad, _ = torch.ops.sfvq.dithered_quantize_backward(residual * (2.0 / divisor), codebook, dither, segment)
        return residual.square().sum(), grad, segment


def _generator(seed: int, *parts: int) -> torch.Generator:
    """A CPU generator seeded from (seed, *parts) by NumPy's SeedSequence mixing."""
    state = np.random.SeedSequence([seed, *parts]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


# Purposes of the seeded generators (the first entry after the seed).
_INIT, _ORDER, _DITHER, _SAMPLE, _EVAL = range(5)


@dataclass
class _Progress:
    """Where a fit stands: everything a checkpoint must hold besides tensors."""

    stage_bits: int = START_BITS
    step: int = 0  # completed steps of this stage
    epoch_losses: list[float] = field(default_factory=list)  # mean loss of each finished epoch
    epoch_error: float = 0.0  # sum of squared errors so far in the current epoch
    epoch_rows: int = 0
    stage_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)  # finished stages
    complete: bool = False


class _Fit:
    def __init__(self, source: VectorSource, bits, epochs, batch_size, lr, seed, device, checkpoint,
                 checkpoint_every, samples_per_epoch, expand_eps, milestones, gamma, init_samples,
                 eval_samples, progress, callback):
        self.source, self.bits, self.epochs, self.batch_size = source, bits, epochs, batch_size
        self.lr, self.seed, self.device = lr, seed, device
        self.checkpoint, self.checkpoint_every = checkpoint, checkpoint_every
        self.milestones, self.gamma = tuple(milestones), gamma
        self.init_samples, self.eval_samples = init_samples, eval_samples
        self.progress, self.callback = progress, callback
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        rows = source.num_rows if source.num_rows is not None else samples_per_epoch
        self.steps_per_epoch = math.ceil(rows / batch_size)
        self.settings = {
            "bits": bits, "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
            "expand_eps": expand_eps, "milestones": list(self.milestones), "gamma": gamma,
            "samples_per_epoch": samples_per_epoch, "init_samples": init_samples, "world_size": self.world,
            "source": {k: v for k, v in source.describe().items() if k != "path"},
        }
        self._order_cache: tuple[tuple[int, int], Tensor] | None = None
        self._stage_seeds: dict[tuple[int, int, int], np.ndarray] = {}

    # -- data --------------------------------------------------------------

    def _checked(self, x: Tensor, what: str) -> Tensor:
        x = x.to(self.device, torch.float32)
        # a float64 sum is finite exactly when every element is: one cheap reduction per batch
        if not torch.isfinite(x.sum(dtype=torch.float64)):
            bad = int((~torch.isfinite(x)).any(dim=1).nonzero()[0])
            raise ValueError(f"fit: {what} holds NaN or Inf (its row {bad}); clean the source before fitting")
        return x

    def _fixed_sample(self, n: int, purpose: int, what: str) -> Tensor:
        """The same rows on every rank: the initialisation and evaluation samples."""
        return self._checked(draw(self.source, n, _generator(self.seed, purpose)), what)

    def _batch(self, stage_bits: int, step: int, total: int) -> tuple[Tensor, int]:
        """This rank's part of the batch at ``step``, and the global batch's row count."""
        what = f"the batch at step {step} of the {stage_bits}-bit stage"
        if self.source.num_rows is None:
            local = len(torch.arange(self.batch_size).tensor_split(self.world)[self.rank])
            x = self.source.sample(local, self._step_generator(_SAMPLE, stage_bits, step, total, self.rank))
            return self._checked(x, what), self.batch_size
        epoch, b = divmod(step, self.steps_per_epoch)
        if self._order_cache is None or self._order_cache[0] != (stage_bits, epoch):
            order = torch.randperm(self.source.num_rows, generator=_generator(self.seed, _ORDER, stage_bits, epoch))
            self._order_cache = ((stage_bits, epoch), order)
        index = self._order_cache[1][b * self.batch_size : (b + 1) * self.batch_size]
        return self._checked(self.source.rows(index.tensor_split(self.world)[self.rank]), what), len(index)

    def _step_generator(self, purpose: int, stage_bits: int, step: int, total: int, rank: int = 0) -> torch.Generator:
        """Generator for one step: seeds for a whole stage are drawn at once (SeedSequence is slow per call)."""
        key = (purpose, stage_bits, rank)
        if key not in self._stage_seeds:
            sequence = np.random.SeedSequence([self.seed, purpose, stage_bits, rank])
            self._stage_seeds[key] = sequence.generate_state(total, np.uint64) >> np.uint64(1)
        return torch.Generator().manual_seed(int(self._stage_seeds[key][step]))

    # -- checkpoints -------------------------------------------------------

    def _save(self, module: SFVQ, codebook: Tensor, optimizer, counts: Tensor, state: _Progress) -> None:
        """Checkpoint (rank 0 writes, all wait): the curve, this stage's Adam state and counts, the progress."""
        if self.checkpoint is None:
            return
        if self.rank == 0:
            tensors = {"codebook": codebook, "segment_counts": counts}
            adam_step = 0.0
            if optimizer is not None and codebook in optimizer.state:
                adam = optimizer.state[codebook]
                tensors["adam_exp_avg"], tensors["adam_exp_avg_sq"] = adam["exp_avg"], adam["exp_avg_sq"]
                adam_step = float(adam["step"])
            progress = {k: v for k, v in state.__dict__.items() if k != "history"}
            write_checkpoint(self.checkpoint, tensors, {
                "module": module_info(module), "history": state.history, "settings": self.settings,
                "training": {**progress, "adam_step": adam_step},
            })
        if self.distributed:
            dist.barrier()

    def resume(self, path) -> tuple[SFVQ, _Progress, dict[str, Tensor]]:
        tensors, info = read_checkpoint(path)
        if "training" not in info:
            raise ValueError(f"resume: {path} holds a fitted curve, not a training checkpoint")
        differ = {k: (info["settings"].get(k), v) for k, v in self.settings.items() if info["settings"].get(k) != v}
        if differ:
            detail = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in differ.items())
            raise ValueError(f"resume: {path} was written by a fit with other settings ({detail})")
        training = dict(info["training"])
        adam_step = training.pop("adam_step")
        module = module_from(tensors, info, device=self.device)
        state = _Progress(**training, history=info["history"])
        return module, state, {**tensors, "adam_step": torch.tensor(adam_step)}

    # -- training ----------------------------------------------------------

    def _evaluate(self, module: SFVQ, sample: Tensor) -> float:
        with torch.no_grad():
            return float(ops.project(sample, module.codebook.detach()).dist.double().sum() / sample.numel())

    def run(self, resume) -> SFVQ:
        if resume is not None:
            module, state, saved = self.resume(resume)
        else:
            module = SFVQ(self.source.dim, self.bits, start_bits=START_BITS, expand_eps=self.settings["expand_eps"],
                          device=self.device)
            # the starting curve is computed on the CPU: the same on every device
            module.initialize(self._fixed_sample(self.init_samples, _INIT, "the initialisation sample").cpu())
            state, saved = _Progress(), {}
        module.train()
        eval_sample = self._fixed_sample(self.eval_samples, _EVAL, "the evaluation sample")
        total = self.steps_per_epoch * self.epochs
        while not state.complete:
            resuming_stage = state.step > 0
            if not resuming_stage and state.stage_bits > START_BITS:
                module.expand()
            self._train_stage(module, state, total, saved if resuming_stage else {}, eval_sample)
            saved = {}
        module.history = state.history
        return module.eval()

    def _train_stage(self, module: SFVQ, state: _Progress, total: int, saved: dict, eval_sample: Tensor) -> None:
        # The stage trains its own copy of the rows in use, so Adam works on K x D
        # values, not on all 2**bits rows the module holds; it is written back at
        # every checkpoint and at the end.
        codebook = torch.nn.Parameter(module.codebook.detach().clone())
        K = codebook.shape[0]
        optimizer = torch.optim.Adam([codebook], lr=self.lr, fused=True)  # one kernel: matters at small K
        counts = torch.zeros(K - 1, dtype=torch.float64)
        if saved:  # continue a stage from a checkpoint
            counts = saved["segment_counts"].double()
            if "adam_exp_avg" in saved:
                optimizer_state = optimizer.state_dict()
                optimizer_state["state"] = {0: {"step": saved["adam_step"],
                                                "exp_avg": saved["adam_exp_avg"].to(codebook),
                                                "exp_avg_sq": saved["adam_exp_avg_sq"].to(codebook)}}
                optimizer.load_state_dict(optimizer_state)
        started = time.perf_counter() - state.stage_seconds
        bar = tqdm(total=total, initial=state.step, unit="step", leave=True, dynamic_ncols=True,
                   desc=f"SFVQ {state.stage_bits}/{self.bits} bits (K={K})",
                   disable=not self.progress or self.rank != 0)
        for _ in range(state.step, total):
            loss = self._step(codebook, optimizer, counts, state, total)
            state.step += 1
            bar.update()
            if state.step % 50 == 0 or state.step == total:
                bar.set_postfix(loss=f"{loss:.4g}", lr=f"{optimizer.param_groups[0]['lr']:.2g}")
            epoch_done = state.step % self.steps_per_epoch == 0
            if epoch_done:
                state.epoch_losses.append(state.epoch_error / (state.epoch_rows * module.dim))
                state.epoch_error, state.epoch_rows = 0.0, 0
            if state.step < total and (epoch_done or (self.checkpoint_every and state.step % self.checkpoint_every == 0)):
                state.stage_seconds = time.perf_counter() - started
                self._save(module, codebook, optimizer, counts, state)
            if self.callback is not None:
                self.callback({"bits": state.stage_bits, "step": state.step, "total": total, "loss": loss})
        bar.close()
        with torch.no_grad():
            module.weight[:K] = codebook
        # Stage done: the checkpoint now says "next stage, not started (not yet expanded)".
        state.history.append(self._stage_record(module, state, counts, total, started, eval_sample))
        state.stage_bits, state.step, state.epoch_losses, state.stage_seconds = state.stage_bits + 1, 0, [], 0.0
        state.complete = state.stage_bits > self.bits
        self._save(module, codebook, None, counts, state)

    def _step(self, codebook: torch.nn.Parameter, optimizer, counts: Tensor, state: _Progress, total: int) -> float:
        x, global_rows = self._batch(state.stage_bits, state.step, total)
        K, D = codebook.shape
        dither = torch.rand(K - 1, generator=self._step_generator(_DITHER, state.stage_bits, state.step, total))
        # loss: squared error over this rank's rows / (all rows of the batch x D); summed across ranks, the batch mean
        error, grad, segment = squared_error_and_grad(x, codebook, dither.to(codebook), global_rows * D)
        codebook.grad = grad
        local_counts = torch.bincount(segment, minlength=K - 1).to(grad.dtype)
        if self.distributed:
            packed = torch.cat([grad.reshape(-1), local_counts, error.reshape(1)])
            dist.all_reduce(packed)
            grad.copy_(packed[: K * D].view(K, D))
            local_counts, error = packed[K * D : -1], packed[-1]
        counts += local_counts.double().cpu()
        optimizer.param_groups[0]["lr"] = learning_rate_at(state.step, total, self.lr, self.milestones, self.gamma)
        optimizer.step()
        error = float(error)
        state.epoch_error += error
        state.epoch_rows += global_rows
        return error / (global_rows * D)

    def _stage_record(self, module, state, counts, total, started, eval_sample) -> dict:
        module.segment_counts.zero_()
        module.segment_counts[: module.codebook_size - 1] = counts.to(module.segment_counts)
        return {"bits": state.stage_bits, "codebook_size": module.codebook_size, "steps": total,
                "epoch_loss": list(state.epoch_losses), "perplexity": module.perplexity,
                "projection_mse": self._evaluate(module, eval_sample), "seconds": time.perf_counter() - started}


def fit(source, bits: int, *, epochs: int = 5, batch_size: int = 256, lr: float = 1e-3, seed: int = 0,
        device=None, resume=None, checkpoint=None, checkpoint_every: int | None = None,
        samples_per_epoch: int | None = None, expand_eps: float = 0.01, milestones=(0.6, 0.8),
        gamma: float = 0.5, init_samples: int = 10_000, eval_samples: int = 65_536, progress: bool = True,
        callback=None) -> SFVQ:
    """Fit an SFVQ curve of ``2**bits`` vectors to ``source`` and return it (an
    :class:`SFVQ` in eval mode; ``.codebook`` is the curve, ``.history`` one record per stage).

    ``source``: a tensor or array ``(N, dim)``, a ``.npy`` file, a directory of ``.npy``
    shards (memory-mapped), or a sampler ``sampler(n, generator) -> (n, dim)`` drawing
    fresh vectors (then ``samples_per_epoch`` says how many make an epoch).

    Stages run at 2, 3, ..., ``bits`` bits, ``epochs`` epochs each, with a fresh Adam at
    ``lr`` multiplied by ``gamma`` at each of ``milestones`` (fractions of the stage).
    ``checkpoint``: file to save progress to (atomically) after every epoch, every
    ``checkpoint_every`` steps and at the end; ``resume``: a checkpoint to continue
    from (the settings must match; it becomes the checkpoint file unless another is
    named). ``seed`` fixes every random draw: the same seed gives the same curve
    (bit for bit on CPU). ``device``: where to train (default: the tensor's device,
    else CPU). ``callback(info)`` is called after every step.
    """
    src = as_source(source)
    for name, value, low in (("bits", bits, START_BITS), ("epochs", epochs, 1), ("batch_size", batch_size, 1),
                             ("init_samples", init_samples, 4), ("eval_samples", eval_samples, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"fit: {name} must be an int >= {low}, got {value!r}")
    if bits > 24:
        raise ValueError(f"fit: bits must be at most 24, got {bits}")
    if not lr > 0:
        raise ValueError(f"fit: lr must be positive, got {lr!r}")
    if src.num_rows is None and (not isinstance(samples_per_epoch, int) or samples_per_epoch < 1):
        raise ValueError("fit: a sampler source needs samples_per_epoch (a positive int): how many vectors make an epoch")
    if src.num_rows is not None and samples_per_epoch is not None:
        raise ValueError("fit: samples_per_epoch applies to sampler sources only (a finite source's epoch is all its rows)")
    if checkpoint_every is not None and (not isinstance(checkpoint_every, int) or checkpoint_every < 1):
        raise ValueError(f"fit: checkpoint_every must be a positive int, got {checkpoint_every!r}")
    if device is None:
        device = src.data.device if hasattr(src, "data") else torch.device("cpu")
    if checkpoint is None and resume is not None:
        checkpoint = resume
    runner = _Fit(src, bits, epochs, batch_size, float(lr), seed, torch.device(device),
                  None if checkpoint is None else os.fspath(checkpoint), checkpoint_every, samples_per_epoch,
                  float(expand_eps), milestones, float(gamma), init_samples, eval_samples, progress, callback)
    return runner.run(resume)
