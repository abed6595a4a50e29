"""The SFVQ fitting recipe: start from 4 norm-quartile means, train, double the
curve, train again, ... up to ``2**bits`` vectors.

Every stage trains the dithered-quantization loss with a fresh Adam. How long a
stage trains and at what learning rate is a :class:`~sfvq_ext.recipe.Recipe`; two
are named (:data:`~sfvq_ext.recipe.PRESETS`):

* ``"default"``: the learning rate is a fraction of the data's spread (so the
  same setting works for latents of any scale), a stage stops when its loss stops
  improving (the learning rate is halved at every plateau, the stage ends after the
  third), stretches of the curve no row uses are moved, in order, onto the busiest
  segments and the used pieces are visited in a shorter tour
  (:mod:`sfvq_ext.curve_surgery`);
* ``"authors"``: the original authors' recipe (Vali & Bäckström, "Interpretable
  latent space using space-filling curves for phonetic analysis in voice
  conversion", Interspeech 2023; their train.py): batch 64, Adam at 1e-3 in the
  data's own units, 5 epochs per stage, the rate halved at 60% and 80% of each stage.

All randomness (data order, dither, samples) is drawn from generators seeded by
``(seed, stage, step)``, so a fit is reproducible and a killed fit resumed from its
last checkpoint ends with the same curve as an uninterrupted one. Under
``torch.distributed`` each rank reads its share of every batch and the gradients
are summed across ranks, so the result equals the single-process fit up to float
rounding. Usage counts and losses are summed across ranks too (every rank holds the
global counts and takes the same decisions), as in an
``SFVQ(..., sync_codebook=True)`` under ``DistributedDataParallel``.
"""

from __future__ import annotations

import dataclasses
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
from .curve_surgery import revive_unused, shorten_bridges
from .data import VectorSource, as_source, draw
from .quantizer import SFVQ
from .recipe import PRESETS, Recipe, flat_settings, learning_rate_at, legacy_settings, recipe_record

__all__ = ["fit", "squared_error_and_grad"]

START_BITS = 2
# Revivals per stage: each restarts the plateau rule, so a bound keeps every stage finite.
MAX_REVIVALS = 3


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
    window_losses: list[float] = field(default_factory=list)  # mean loss of each finished window
    window_error: float = 0.0
    window_rows: int = 0
    best_window: float | None = None  # the plateau rule's best window loss in this stage
    decays: int = 0  # plateaus so far in this stage
    revived: int = 0  # vertices moved by revive_unused in this stage
    revivals: int = 0  # windows that ended with a revival in this stage (at most MAX_REVIVALS)
    stopped: bool = False  # the plateau rule ended this stage
    data_scale: float = 1.0  # the data's spread (Recipe.lr with lr_unit "data" is in its units)
    stage_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)  # finished stages
    complete: bool = False


class _Fit:
    def __init__(self, source: VectorSource, bits, preset, recipe: Recipe, seed, device, checkpoint,
                 checkpoint_every, samples_per_epoch, init_samples, eval_samples, progress, callback):
        self.source, self.bits, self.recipe, self.seed, self.device = source, bits, recipe, seed, device
        rows = source.num_rows if source.num_rows is not None else samples_per_epoch
        self.batch_size = recipe.batch_size or min(1024, max(64, rows // 64))
        self.checkpoint, self.checkpoint_every = checkpoint, checkpoint_every
        self.init_samples, self.eval_samples = init_samples, eval_samples
        self.progress, self.callback = progress, callback
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        self.steps_per_epoch = math.ceil(rows / self.batch_size)
        self.max_steps = self.steps_per_epoch * recipe.epochs
        # a window is at most an epoch, so small data is judged once per epoch
        self.window_steps = min(max(1, math.ceil(recipe.window / self.batch_size)), self.steps_per_epoch)
        self.settings = {
            "bits": bits, "seed": seed, "preset": preset, "recipe": recipe_record(recipe),
            "samples_per_epoch": samples_per_epoch, "init_samples": init_samples, "world_size": self.world,
            "source": {k: v for k, v in source.describe().items() if k != "path"},
        }
        self._order_cache: tuple[tuple[int, int], Tensor] | None = None
        self._stage_seeds: dict[tuple[int, int, int], np.ndarray] = {}

    # -- data --------------------------------------------------------------

    def _checked(self, x: Tensor, what: str, index: Tensor | None) -> Tensor:
        """``x`` in float32 on the device; ``index``: the source rows it was read from (None: sampled)."""
        x = x.to(self.device, torch.float32)
        # a float64 sum is finite exactly when every element is: one cheap reduction per batch
        if not torch.isfinite(x.sum(dtype=torch.float64)):
            bad = int((~torch.isfinite(x)).any(dim=1).nonzero()[0])
            where = f"its row {bad}" if index is None else self.source.locate(int(index[bad]))
            raise ValueError(f"fit: {what} holds NaN or Inf, or values beyond float32's range ({where}); "
                             "clean the source before fitting")
        return x

    def _fixed_sample(self, n: int, purpose: int, what: str) -> Tensor:
        """The same rows on every rank: the initialisation and evaluation samples."""
        x, index = draw(self.source, n, _generator(self.seed, purpose), return_index=True)
        return self._checked(x, what, index)

    def _batch(self, stage_bits: int, step: int) -> tuple[Tensor, int]:
        """This rank's part of the batch at ``step``, and the global batch's row count."""
        what = f"the batch at step {step} of the {stage_bits}-bit stage"
        if self.source.num_rows is None:
            local = len(torch.arange(self.batch_size).tensor_split(self.world)[self.rank])
            x = self.source.sample(local, self._step_generator(_SAMPLE, stage_bits, step, self.rank))
            return self._checked(x, what, None), self.batch_size
        epoch, b = divmod(step, self.steps_per_epoch)
        if self._order_cache is None or self._order_cache[0] != (stage_bits, epoch):
            order = torch.randperm(self.source.num_rows, generator=_generator(self.seed, _ORDER, stage_bits, epoch))
            self._order_cache = ((stage_bits, epoch), order)
        index = self._order_cache[1][b * self.batch_size : (b + 1) * self.batch_size]
        mine = index.tensor_split(self.world)[self.rank]
        return self._checked(self.source.rows(mine), what, mine), len(index)

    def _step_generator(self, purpose: int, stage_bits: int, step: int, rank: int = 0) -> torch.Generator:
        """Generator for one step: seeds for a whole stage are drawn at once (SeedSequence is slow per call)."""
        key = (purpose, stage_bits, rank)
        if key not in self._stage_seeds:
            sequence = np.random.SeedSequence([self.seed, purpose, stage_bits, rank])
            self._stage_seeds[key] = sequence.generate_state(self.max_steps, np.uint64) >> np.uint64(1)
        return torch.Generator().manual_seed(int(self._stage_seeds[key][step]))

    # -- checkpoints -------------------------------------------------------

    def _save(self, module: SFVQ, codebook: Tensor, optimizer, counts: Tensor, window_counts: Tensor,
              state: _Progress) -> None:
        """Checkpoint (rank 0 writes, all wait): the curve, this stage's Adam state and counts, the progress."""
        if self.checkpoint is None:
            return
        if self.rank == 0:
            tensors = {"codebook": codebook, "segment_counts": counts, "window_counts": window_counts}
            adam_step = 0.0
            if optimizer is not None and optimizer.state.get(codebook):
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
        saved = info["settings"] if "recipe" in info["settings"] else legacy_settings(info["settings"])
        saved, now = flat_settings(saved), flat_settings(self.settings)
        differ = {k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v}
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
            module = SFVQ(self.source.dim, self.bits, start_bits=START_BITS, expand_eps=self.recipe.expand_eps,
                          device=self.device)
            # the starting curve is computed on the CPU: the same on every device
            sample = self._fixed_sample(self.init_samples, _INIT, "the initialisation sample").cpu()
            module.initialize(sample)
            spread = float(sample.double().var(dim=0, correction=0).mean().sqrt())
            state, saved = _Progress(data_scale=spread if spread > 0 else 1.0), {}
        module.train()
        eval_sample = self._fixed_sample(self.eval_samples, _EVAL, "the evaluation sample")
        # One line across stages: work counted as K per stage (a step costs about K x batch x D)
        # so its rate and time left follow the stages that cost more.
        overall = tqdm(total=sum(2**b for b in range(START_BITS, self.bits + 1)), unit="work", leave=True,
                       initial=sum(2**h["bits"] for h in state.history), dynamic_ncols=True,
                       bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]",
                       disable=not self.progress or self.rank != 0)
        while not state.complete:
            overall.set_description(f"SFVQ stage {state.stage_bits - START_BITS + 1} of {self.bits - START_BITS + 1}")
            resuming_stage = state.step > 0
            if not resuming_stage and state.stage_bits > START_BITS:
                module.expand()
            self._train_stage(module, state, saved if resuming_stage else {}, eval_sample)
            saved = {}
            record = state.history[-1]
            overall.update(2 ** record["bits"])
            if self.progress and self.rank == 0:
                overall.write(f"stage {record['bits'] - START_BITS + 1} of {self.bits - START_BITS + 1} "
                              f"(K={record['codebook_size']}): projection MSE {record['projection_mse']:.5g}, "
                              f"perplexity {record['perplexity']:.1f} of {record['codebook_size'] - 1}, "
                              f"{record['steps']} steps ({record['stop']}), {record['seconds']:.1f} s")
        overall.close()
        module.history = state.history
        # the settings, and what the preset's rules made of them for this data
        module.fit_settings = {**self.settings, "batch_size_used": self.batch_size, "data_scale": state.data_scale,
                               "lr_used": self._start_learning_rate(state.data_scale)}
        return module.eval()

    def _train_stage(self, module: SFVQ, state: _Progress, saved: dict, eval_sample: Tensor) -> None:
        # The stage trains its own copy of the rows in use, so Adam works on K x D
        # values, not on all 2**bits rows the module holds; it is written back at
        # every checkpoint and at the end.
        codebook = torch.nn.Parameter(module.codebook.detach().clone())
        K = codebook.shape[0]
        optimizer = torch.optim.Adam([codebook], lr=self.recipe.lr, fused=True)  # one kernel: matters at small K
        counts = torch.zeros(K - 1, dtype=torch.float64)
        window_counts = torch.zeros(K - 1, dtype=torch.float64)
        if saved:  # continue a stage from a checkpoint
            counts = saved["segment_counts"].double()
            if "window_counts" in saved:
                window_counts = saved["window_counts"].double()
            if "adam_exp_avg" in saved:
                optimizer_state = optimizer.state_dict()
                optimizer_state["state"] = {0: {"step": saved["adam_step"],
                                                "exp_avg": saved["adam_exp_avg"].to(codebook),
                                                "exp_avg_sq": saved["adam_exp_avg_sq"].to(codebook)}}
                optimizer.load_state_dict(optimizer_state)
        started = time.perf_counter() - state.stage_seconds
        bar = tqdm(total=self.max_steps, initial=state.step, unit="step", leave=False, dynamic_ncols=True,
                   desc=f"  {state.stage_bits}/{self.bits} bits (K={K})", disable=not self.progress or self.rank != 0)
        while state.step < self.max_steps and not state.stopped:
            loss = self._step(codebook, optimizer, counts, window_counts, state)
            state.step += 1
            bar.update()
            if state.step % 50 == 0 or state.step == self.max_steps:
                bar.set_postfix(loss=f"{loss:.4g}", lr=f"{optimizer.param_groups[0]['lr']:.2g}")
            epoch_done = state.step % self.steps_per_epoch == 0
            if epoch_done:
                state.epoch_losses.append(state.epoch_error / (state.epoch_rows * module.dim))
                state.epoch_error, state.epoch_rows = 0.0, 0
            window_done = state.step % self.window_steps == 0
            if window_done:
                self._end_window(codebook, optimizer, counts, window_counts, state, module.dim)
            if state.step < self.max_steps and not state.stopped and (
                    epoch_done or window_done or (self.checkpoint_every and state.step % self.checkpoint_every == 0)):
                state.stage_seconds = time.perf_counter() - started
                self._save(module, codebook, optimizer, counts, window_counts, state)
            if self.callback is not None:
                self.callback({"bits": state.stage_bits, "step": state.step, "total": self.max_steps, "loss": loss})
        bar.close()
        with torch.no_grad():
            module.weight[:K] = codebook
        # Stage done: the checkpoint now says "next stage, not started (not yet expanded)".
        state.history.append(self._stage_record(module, state, counts, started, eval_sample))
        state.stage_bits, state.step, state.stage_seconds = state.stage_bits + 1, 0, 0.0
        # a stage may stop inside an epoch or window: the next one starts both afresh
        state.epoch_losses, state.epoch_error, state.epoch_rows = [], 0.0, 0
        state.window_losses, state.window_error, state.window_rows, state.best_window = [], 0.0, 0, None
        state.decays, state.revived, state.revivals, state.stopped = 0, 0, 0, False
        state.complete = state.stage_bits > self.bits
        self._save(module, codebook, None, counts, window_counts.zero_(), state)

    def _start_learning_rate(self, data_scale: float) -> float:
        """Every stage's learning rate before its schedule lowers it."""
        r = self.recipe
        return r.lr * (data_scale * math.sqrt(self.batch_size / 1024) if r.lr_unit == "data" else 1.0)

    def _learning_rate(self, state: _Progress) -> float:
        r = self.recipe
        lr = self._start_learning_rate(state.data_scale)
        if r.schedule == "milestones":
            return learning_rate_at(state.step, self.max_steps, lr, r.milestones, r.gamma)
        return lr * r.gamma**state.decays

    def _end_window(self, codebook, optimizer, counts: Tensor, window_counts: Tensor, state: _Progress,
                    dim: int) -> None:
        """A window of steps is done: record its loss, revive unused stretches, apply the plateau rule."""
        r = self.recipe
        loss = state.window_error / (state.window_rows * dim)
        state.window_losses.append(loss)
        state.window_error, state.window_rows = 0.0, 0
        moved = reversals = 0
        if r.revive and state.revivals < MAX_REVIVALS:
            new, new_counts, moved = revive_unused(codebook.detach(), window_counts)
            new, _, reversals = shorten_bridges(new, new_counts)
        window_counts.zero_()
        if moved or reversals:
            with torch.no_grad():
                codebook.copy_(new)
            optimizer.state.pop(codebook, None)  # the moments belonged to other vertices
            counts.zero_()
            state.revived += moved
            state.revivals += 1
            state.best_window = None  # the curve changed: judge progress afresh
            return
        if r.schedule != "plateau":
            return
        if state.best_window is not None and loss > state.best_window * (1 - r.tol):
            if state.decays == r.decays:
                state.stopped = True
            else:
                state.decays += 1
        state.best_window = loss if state.best_window is None else min(state.best_window, loss)

    def _step(self, codebook: torch.nn.Parameter, optimizer, counts: Tensor, window_counts: Tensor,
              state: _Progress) -> float:
        x, global_rows = self._batch(state.stage_bits, state.step)
        K, D = codebook.shape
        dither = torch.rand(K - 1, generator=self._step_generator(_DITHER, state.stage_bits, state.step))
        # loss: squared error over this rank's rows / (all rows of the batch x D); summed across ranks, the batch mean
        error, grad, segment = squared_error_and_grad(x, codebook.detach(), dither.to(codebook), global_rows * D)
        codebook.grad = grad
        local_counts = torch.bincount(segment, minlength=K - 1).to(grad.dtype)
        if self.distributed:
            packed = torch.cat([grad.reshape(-1), local_counts, error.reshape(1)])
            dist.all_reduce(packed)
            grad.copy_(packed[: K * D].view(K, D))
            local_counts, error = packed[K * D : -1], packed[-1]
        local_counts = local_counts.double().cpu()
        counts += local_counts
        window_counts += local_counts
        optimizer.param_groups[0]["lr"] = self._learning_rate(state)
        optimizer.step()
        error = float(error)
        state.epoch_error += error
        state.epoch_rows += global_rows
        state.window_error += error
        state.window_rows += global_rows
        return error / (global_rows * D)

    def _stage_record(self, module, state, counts, started, eval_sample) -> dict:
        module.segment_counts.zero_()
        module.segment_counts[: module.current_codebook_size - 1] = counts.to(module.segment_counts)
        return {"bits": state.stage_bits, "codebook_size": module.current_codebook_size, "steps": state.step,
                "stop": "converged" if state.stopped else "epochs",
                "epoch_loss": list(state.epoch_losses), "window_loss": list(state.window_losses),
                "revived": state.revived, "perplexity": module.perplexity,
                "projection_mse": self._evaluate(module, eval_sample), "seconds": time.perf_counter() - started}


def fit(source, bits: int, *, preset: str = "default", epochs: int | None = None, batch_size: int | None = None,
        lr: float | None = None, seed: int = 0, device=None, resume=None, checkpoint=None,
        checkpoint_every: int | None = None, samples_per_epoch: int | None = None, init_samples: int = 10_000,
        eval_samples: int = 65_536, progress: bool = True, callback=None, **recipe) -> SFVQ:
    """Fit an SFVQ curve of ``2**bits`` vectors to ``source`` and return it (an
    :class:`SFVQ` in eval mode; ``.codebook`` is the curve, ``.history`` one record per
    stage, ``.fit_settings`` the settings, with ``batch_size_used``, ``data_scale`` and
    ``lr_used``, each stage's starting learning rate).

    ``source``: a tensor or array ``(N, dim)``, a ``.npy`` file, a directory of ``.npy``
    shards (memory-mapped), or a sampler ``sampler(n, generator) -> (n, dim)`` drawing
    fresh vectors (then ``samples_per_epoch`` says how many make an epoch). Rows are
    trained in float32.

    Stages run at 2, 3, ..., ``bits`` bits with the :class:`Recipe` of ``preset``
    (``"default"`` or ``"authors"``, :data:`PRESETS`); ``epochs``, ``batch_size``, ``lr``
    and any other :class:`Recipe` field given as a keyword (``schedule``, ``milestones``,
    ``gamma``, ``window``, ``tol``, ``decays``, ``revive``, ``expand_eps``, ``lr_unit``)
    replace the preset's value. ``checkpoint``: file to save progress to (atomically)
    after every epoch and window, every ``checkpoint_every`` steps and at the end;
    ``resume``: a checkpoint to continue from (the settings must match; it becomes the
    checkpoint file unless another is named). ``seed`` fixes every random draw: the
    same seed gives the same curve (bit for bit on CPU). ``device``: where to train
    (default: the tensor's device, else CPU). ``progress``: one line across stages
    (stage k of n, time left) and each stage's projection MSE as it ends.
    ``callback(info)`` is called after every step.

    Each ``.history`` record: ``bits``, ``codebook_size``, ``steps``, ``stop``
    (``"converged"`` or ``"epochs"``), ``epoch_loss`` and ``window_loss`` (mean
    dithered loss per component of each finished epoch / window), ``revived`` (vertices
    moved), ``perplexity`` (of the segment usage since the last revival),
    ``projection_mse`` (exact projection of ``eval_samples`` fixed rows, per component),
    ``seconds`` (the stage's wall time, across resumes).

    Raises ``ValueError`` naming the setting for bad arguments, for a source row
    with NaN or Inf, and for a resume with other settings; ``TypeError`` for an
    unknown keyword or source type.
    """
    if preset not in PRESETS:
        raise ValueError(f"fit: preset must be one of {sorted(PRESETS)}, got {preset!r}")
    fields = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(recipe) - fields)
    if unknown:
        raise TypeError(f"fit: unknown keyword argument(s) {unknown}; recipe settings are {sorted(fields)}")
    given = {"epochs": epochs, "batch_size": batch_size, "lr": lr, **recipe}
    given = {k: v for k, v in given.items() if v is not None}
    if "lr" in given:
        given["lr"] = float(given["lr"])
    if "milestones" in given:
        given["milestones"] = tuple(given["milestones"])
    chosen = dataclasses.replace(PRESETS[preset], **given)
    chosen.check()
    src = as_source(source)
    for name, value, low in (("bits", bits, START_BITS), ("init_samples", init_samples, 4),
                             ("eval_samples", eval_samples, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"fit: {name} must be an int >= {low}, got {value!r}")
    if bits > 24:
        raise ValueError(f"fit: bits must be at most 24, got {bits}")
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
    runner = _Fit(src, bits, preset, chosen, seed, torch.device(device),
                  None if checkpoint is None else os.fspath(checkpoint), checkpoint_every, samples_per_epoch,
                  init_samples, eval_samples, progress, callback)
    return runner.run(resume)
