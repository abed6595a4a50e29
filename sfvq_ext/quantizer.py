"""The SFVQ quantizer as an ``nn.Module`` to drop into a model.

Its interface follows ``VectorQuantize`` of vector-quantize-pytorch
(https://github.com/lucidrains/vector-quantize-pytorch) where the meaning is the
same: ``forward`` returns ``(quantized, indices, loss)``; ``accept_image_fmap``,
``channel_last``, ``sync_codebook``, ``freeze_codebook``, ``get_codes_from_indices``
and ``get_output_from_indices`` carry that library's names. What differs, and why,
is stated on :class:`SFVQ`.
"""

from __future__ import annotations

import inspect
import math
import os
import sys
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.utils.checkpoint
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from . import ops

__all__ = ["SFVQ", "GRADIENT_MODES", "hash_uniform"]

GRADIENT_MODES = ("nsvq", "straight_through", "none")

# ---------------------------------------------------------------------------
# A counter-based random stream written in tensor ops, for seeded modules.
#
# A torch.Generator cannot enter a torch.compile graph, so a seeded module draws
# its dither and noise from a hash of (key, step, stream, element index) instead:
# the state is four integers in a buffer (it is saved, loaded, moved to a device
# and broadcast like any other), every draw is a pure function of it, and the
# same integers give the same bits on every device. The hash is "lowbias32"
# (Chris Wellons, public domain): xor-shift / multiply rounds on 32-bit words. The
# words live in int64 tensors and each product is split so no int64 overflows.

_M32 = 0xFFFFFFFF
_DITHER_STREAM, _NOISE_STREAM = 1, 2


def _mul32(x: Tensor, c: int) -> Tensor:
    """(x * c) mod 2**32 for x in [0, 2**32) held in int64, without int64 overflow."""
    lo = x * (c & 0xFFFF)  # < 2**48
    hi = ((x * (c >> 16)) & 0xFFFF) << 16  # the product's bits 16..31
    return (lo + hi) & _M32


def _mix32(x: Tensor) -> Tensor:
    """lowbias32: a bijective 32-bit hash with good avalanche (inputs in [0, 2**32))."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def hash_uniform(state: Tensor, n: int, stream: int, salt: int = 0) -> Tensor:
    """``n`` float32 numbers in ``[0, 1)`` (multiples of ``2**-24``) from the counter-based
    stream of a seeded :class:`SFVQ`.

    ``state`` is the module's ``rng_state`` buffer, int64 ``(4,)``: ``[seeded, key_lo,
    key_hi, step]`` (keys in ``[0, 2**32)``). Element ``i`` is a hash of ``(key_lo,
    key_hi, step, stream, salt, i)``: the same integers give the same numbers on every
    device, in eager mode and inside a compiled graph. Returns a tensor on ``state``'s device.
    """
    step = state[3]
    word = _mix32(torch.full_like(step, (stream & 0xFFFF) | (salt & 0xFFFF) << 16))
    word = _mix32(word ^ (step >> 32))
    word = _mix32(word ^ (step & _M32))
    word = _mix32(word ^ state[2])
    word = _mix32(word ^ state[1])
    index = torch.arange(n, dtype=torch.int64, device=state.device)
    h = _mix32(_mix32((index & _M32) ^ word) ^ (index >> 32))
    return (h >> 8).to(torch.float32) * 2.0**-24


def _hash_normal(state: Tensor, n: int, salt: int) -> Tensor:
    """``n`` standard normal float32 numbers from :func:`hash_uniform` (Box-Muller)."""
    half = (n + 1) // 2
    u = hash_uniform(state, 2 * half, _NOISE_STREAM, salt)
    radius = torch.sqrt(-2.0 * torch.log1p(-u[:half]))  # 1 - u in (0, 1]: finite
    angle = (2 * math.pi) * u[half:]
    return torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)])[:n]


# torch.compiler.disable imports torch._dynamo when it decorates (~2 s on a small
# machine, paid by every `import sfvq_ext` and CLI command); torch's own lazy form
# imports it only when a decorated method is first called.
_compiler_disable = getattr(torch, "_disable_dynamo", torch.compiler.disable)


def _pack_hooks_in_force() -> list:
    """The saved-tensors pack hooks in force (``torch.autograd.graph.saved_tensors_hooks``),
    innermost first. torch shows only the innermost pair, so the stack is read by popping
    every pair and pushing them back in their order."""
    autograd = torch._C._autograd
    if not autograd._saved_tensors_hooks_is_enabled():
        return []
    popped = []
    try:
        while (top := autograd._top_saved_tensors_default_hooks(True)) is not None:
            popped.append(top)
            autograd._pop_saved_tensors_default_hooks()
    finally:
        for pack, unpack in reversed(popped):
            autograd._push_saved_tensors_default_hooks(pack, unpack)
    return [inspect.unwrap(pack) for pack, _ in popped]


def _closure_value(fn, name: str):
    code, cells = getattr(fn, "__code__", None), getattr(fn, "__closure__", None)
    if code is None or cells is None or name not in code.co_freevars:
        return None
    return cells[code.co_freevars.index(name)].cell_contents


def _checkpoint_regions() -> tuple[object | None, list]:
    """Where a forward runs among activation-checkpointed regions (``torch.utils.checkpoint``
    has no public API for this): ``(recomputed, running)``. ``recomputed``: the innermost
    non-reentrant region whose recomputation is running (torch's frame of the region, which
    its recomputation's pack hook holds), else None. ``running``: the regions whose
    original forward is running (inside that recomputation, if any): non-reentrant ones as
    the frame their pack hook holds, reentrant ones as the ``ctx`` of the running
    ``CheckpointFunction.forward``, which is also the backward node that will recompute it."""
    recomputed, running = None, []
    for hook in _pack_hooks_in_force():
        name = getattr(hook, "__qualname__", "")
        if name.startswith("_recomputation_hook."):
            ref = _closure_value(hook, "target_frame_ref")
            recomputed = ref() if isinstance(ref, weakref.ref) else None
            break
        if name.startswith("_checkpoint_hook.") and (frame := _closure_value(hook, "frame")) is not None:
            running.append(frame)
    return recomputed, running + _reentrant_regions()


_REENTRANT_FORWARD = getattr(getattr(torch.utils.checkpoint, "CheckpointFunction", None), "forward", None)


def _reentrant_regions() -> list:
    """The ``ctx`` of every ``CheckpointFunction.forward`` (the reentrant checkpoint) on the call stack."""
    code = getattr(_REENTRANT_FORWARD, "__code__", None)
    regions, frame = [], sys._getframe()
    while frame is not None and code is not None:
        if frame.f_code is code and frame.f_locals.get("ctx") is not None:
            regions.append(frame.f_locals["ctx"])
        frame = frame.f_back
    return regions


class _Draws:
    """The stream states of one region's original forward, in order, and per backward
    pass (graph task) how many of them its recomputation has taken."""

    def __init__(self):
        self.states: list[Tensor] = []
        self.taken: dict[int, int] = {}

    def take(self) -> Tensor:
        task = torch._C._current_graph_task_id()
        i = self.taken.get(task, 0)
        if i >= len(self.states):
            raise RuntimeError("SFVQ: a checkpointed region's recomputation runs the module more often than its "
                               "original forward did")
        self.taken[task] = i + 1
        return self.states[i]


class _Replay:
    """The ``rng_state`` of seeded training forwards, handed back to the same forwards when
    activation checkpointing runs them again during backward, so that they draw the same
    dither and noise. Each forward's state is kept with every checkpointed region it runs
    in (nested ones included; weakly keyed by torch's object for the region, so it goes
    with the region's graph); a region's recomputation takes its states in their original
    order, from the first again in each backward pass (``retain_graph``, double backward).
    So any number of calls per region, regions recomputed in any order, nested regions,
    both modes and calls outside regions all replay exactly."""

    def __init__(self):
        self.regions: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # region -> _Draws

    def record(self, state: Tensor) -> None:
        self._keep(state.clone(), _checkpoint_regions()[1])

    def take(self) -> Tensor:
        recomputed, running = _checkpoint_regions()
        if recomputed is None:  # a reentrant region: its backward node recomputes it
            recomputed = torch._C._current_autograd_node()
        try:
            draws = self.regions.get(recomputed)
        except TypeError:  # None, or a node that takes no weak reference: no region of ours
            draws = None
        if draws is None:
            raise RuntimeError("SFVQ: a forward recomputed during backward (activation checkpointing) has no "
                               "record of its original forward (was the state loaded or reseeded in between?)")
        state = draws.take()
        self._keep(state, running)  # regions this recomputation runs anew: theirs to recompute later
        return state

    def _keep(self, state: Tensor, regions: list) -> None:
        for region in regions:
            self.regions.setdefault(region, _Draws()).states.append(state)

    def clear(self) -> None:
        self.regions.clear()


def _bits_from(bits, codebook_size) -> int:
    """The ``bits`` of a codebook given as ``bits`` or as ``codebook_size = 2**bits``."""
    if (bits is None) == (codebook_size is None):
        raise ValueError("SFVQ: give the codebook's size as bits (2**bits vectors) or as codebook_size, "
                         f"exactly one of them; got bits={bits!r}, codebook_size={codebook_size!r}")
    if codebook_size is not None:
        if (not isinstance(codebook_size, int) or isinstance(codebook_size, bool) or codebook_size < 4
                or codebook_size > 2**24 or codebook_size & (codebook_size - 1)):
            raise ValueError(f"SFVQ: codebook_size must be a power of two in [4, 2**24] (the curve doubles as it "
                             f"grows), got {codebook_size!r}")
        return codebook_size.bit_length() - 1
    if not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= 24:
        hint = (f" (for {bits} vectors pass codebook_size={bits})"
                if isinstance(bits, int) and bits > 24 and not bits & (bits - 1) else "")
        raise ValueError(f"SFVQ: bits must be an int in [2, 24] (a curve of 2**bits vectors), got {bits!r}{hint}")
    return bits


def _check_start_sample(rows: Tensor, where: str, name: str, hint: str) -> None:
    """A sample the curve starts from, flattened to ``(N, dim)``: at least 4 rows
    (the norm quartiles of :func:`sfvq_ext.init_codebook`), all finite. The error
    names the caller's method and argument, and the first bad row."""
    if rows.shape[0] < 4:
        raise ValueError(f"{where}: {name} must hold at least 4 rows of size {rows.shape[1]} to start the curve "
                         f"from, got {rows.shape[0]}{hint}")
    bad = ~torch.isfinite(rows).all(dim=1)
    if bad.any():
        raise ValueError(f"{where}: {name} contains NaN or Inf (first at row {int(bad.nonzero()[0])} of {name} "
                         f"flattened to (N, {rows.shape[1]})), and the curve would start from it{hint}")


_LIBRARY_DIRS = tuple(os.path.join(os.path.dirname(module.__file__), "") for module in (ops, torch))


def _user_stacklevel() -> int:
    """The ``stacklevel`` for ``warnings.warn`` (called by this function's caller)
    that points at the first line outside sfvq_ext and torch: the user's call,
    past nn.Module's call machinery and the compiler's wrappers."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_LIBRARY_DIRS):
        frame, level = frame.f_back, level + 1
    return level


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


class SFVQ(nn.Module):
    """Space-filling vector quantizer: an ordered codebook read as a curve.

    ``forward(x)`` takes ``x`` of shape ``(..., dim)`` (any float dtype) and returns
    ``(quantized, indices, loss)``:

    * train mode: each row goes to the nearest *dithered* point (one random point
      per segment, shared by the batch); ``indices`` are those segments;
    * eval mode: the exact nearest point on the curve; ``indices`` are its segments;
    * ``quantized`` has ``x``'s shape and dtype; ``indices`` is int64 of ``x``'s shape
      without the channel dimension; ``loss`` is the mean squared quantization error
      ``mean((x - q)^2)``, float32 (float64 when ``x`` or the codebook is float64),
      differentiable in the codebook (and in ``x``).

    With ``return_coords=True`` a fourth output holds each row's curve coordinate
    ``segment + t`` (float32; float64 for a float64 codebook): in training the
    coordinate of its dithered point, in eval of its exact nearest point.
    ``get_output_from_coords(coords)`` gives back ``quantized`` (up to rounding).

    How gradients reach ``x`` through ``quantized`` (``gradient=``):

    * ``"nsvq"`` (default, for use inside a model): in training, noise
      substitution ``x + (|x - q| / |v|) v`` with ``v ~ N(0, I)``: the output
      carries the quantization error's size, the codebook learns from the
      downstream loss, and the gradient is finite even where ``x == q``;
    * ``"straight_through"``: ``x + (q - x).detach()``; add ``loss`` to train the codebook;
    * ``"none"``: ``quantized`` is ``q`` itself (training SFVQ alone on ``loss``).

    In eval mode ``"nsvq"`` and ``"none"`` return the exact point ``q``, whose
    gradient to ``x`` is the projection onto its segment.

    **Growth.** The codebook starts at ``2**start_bits`` vectors when initialised
    (from the first training batch, :meth:`initialize`, or :meth:`set_codebook`) and
    grows by itself: after every ``grow_every`` training steps at one size it doubles
    (:meth:`expand`, which keeps the curve's shape: the ordering comes from this
    recursive doubling) until it has ``codebook_size = 2**bits`` vectors. So an
    unchanged training loop reaches the configured size; ``current_codebook_size`` is
    the size in use now and ``stage_steps`` (a buffer, saved with the state) counts the
    steps at it. ``grow_every=None`` leaves growth to calls of :meth:`expand`. Storage
    for all ``2**bits`` rows is allocated up front (``weight``), so the parameter, an
    optimizer and ``DistributedDataParallel`` keep working across expansions;
    ``codebook`` is the part in use. An optimizer's per-row state (Adam's moments) is
    not moved with the rows: moved, the two vertices split from one share one momentum
    and keep together (held-out MSE 70% higher in ``benchmarks/vq_swap.py``). Starting
    the codebook's state afresh at each doubling trains better than leaving it (6%
    lower there); an unchanged loop cannot do that, a loop that holds the optimizer can,
    with an expand hook: ``vq.register_expand_hook(lambda vq: optimizer.state.pop(vq.weight, None))``.
    An EMA copy (``torch.optim.swa_utils.AveragedModel``) averages ``weight`` row by
    row, and a doubling puts other vertices in the rows: grow the copy with the layer,
    ``vq.register_expand_hook(lambda vq: ema.module.expand())``, and keep its default
    ``use_buffers=False`` (measured in ``benchmarks/ema_growth.py``).

    **Precision.** The search runs in the wider of the input's and the codebook's
    dtypes (a bfloat16 codebook never rounds float32 inputs; float16 inputs against a
    float32 codebook are searched in float32), also under autocast; ``quantized`` is
    returned in the input's dtype.

    **Layout** (vector-quantize-pytorch's switches): ``accept_image_fmap=True`` takes
    image feature maps ``(B, dim, H, W)`` and returns ``quantized`` ``(B, dim, H, W)``
    and ``indices`` ``(B, H, W)``; ``channel_last=False`` takes ``(B, dim, ...)`` (the
    channel second) and returns the same layout. The default is ``(..., dim)``.

    **State.** Everything is in tensors: ``weight`` (parameter), the buffers
    ``segment_counts``, ``curve_size`` (rows in use), ``curve_initialized``,
    ``rng_state`` and ``stage_steps``, and ``forward`` reads the state from them
    (``torch.func.functional_call``, stateless swaps, EMA and model-merging tools see
    the state they pass). So ``state_dict()`` holds only tensors
    (``safetensors.torch.save_model`` works) and a loaded module knows its size. A state dict written before these
    buffers existed (its ``_extra_state`` dict) still loads; one without the size
    (``strict=False``, tensors kept by hand) is read from its ``weight`` with a
    warning: non-zero rows make it initialised, never overwritten by the next batch.

    **Several processes.** The module never calls a collective unless
    ``sync_codebook=True``. Then (with a process group initialised) the starting curve
    is rank 0's (broadcast in :meth:`initialize`) and every training step's segment
    counts are summed over the ranks (``all_reduce``), so ``segment_usage`` and
    ``perplexity`` are the global ones on every rank, as in :func:`sfvq_ext.fit`.
    Use it under ``DistributedDataParallel`` (which averages the gradients), and
    call ``forward`` on every rank at every step. Without it each rank counts its own
    rows (note that DDP's default ``broadcast_buffers=True`` copies rank 0's buffers
    to every rank before each forward).

    **Randomness.** The dither and the NSVQ noise come from the global RNG, or, after
    ``vq.generator = torch.Generator().manual_seed(s)`` (or ``vq.manual_seed(s)``),
    from the module's own counter-based stream (:func:`hash_uniform`): reproducible,
    the same on CPU and CUDA, saved in ``rng_state``, and able to run inside one
    ``torch.compile(fullgraph=True)`` graph. The dither depends on the seed and step
    only (the same on every rank, as in ``fit``); the noise also on the rank.

    **Inside a training stack.** One training forward is one step: it advances the
    stream, counts its rows and may grow the curve, once. A forward that activation
    checkpointing (``torch.utils.checkpoint``, either mode) runs again during backward
    is recognised (it runs inside the backward pass) and draws the same dither and
    noise as the original, with no side effect, so the gradients are those of the
    step's loss. In either mode a module may run any number of times per step, in one
    region, in several (recomputed in any order), in nested ones and outside them, and
    backward may recompute them more than once (``retain_graph``, double backward):
    each recomputed call draws what its original drew. (Automatic growth between two
    calls of one step changes the codebook under the step's graph: autograd refuses it,
    reentrant checkpointing does not notice; pass ``grow_every=None`` and :meth:`expand`
    between steps there.) Known limit: under ``torch.compile`` a
    checkpointed region's recomputation is compiled code, which this recognition does
    not reach: a seeded module there gets the codebook gradients of other draws (the
    compiled backward recomputes them from the advanced ``rng_state``: torch's
    partitioner recomputes reads of a buffer the forward mutates, an open torch bug,
    pytorch/pytorch#197039), and an SFVQ
    compiled on its own inside an eager region counts its step twice. An unseeded
    module (torch's RNG, which compiled checkpointing replays) in a region of a
    compiled model is exact. Frozen means ``weight.requires_grad``
    is off (``freeze_codebook``), as for any parameter, so ``DistributedDataParallel``
    needs no ``find_unused_parameters``.

    **Differences from** ``VectorQuantize``: ``indices`` name *segments*
    ``c_i -> c_{i+1}`` (in ``[0, K-2]``), not codebook rows, and a segment index drops
    the position along the segment: the full index of a row is its curve coordinate.
    ``get_codes_from_indices`` therefore returns segment midpoints and
    ``get_output_from_coords`` is the lossless counterpart. ``sync_codebook`` defaults
    to ``False`` (not "whenever a process group exists"). There is no EMA update,
    commitment weight or input projection: ``loss`` is the plain quantization MSE.

    Args:
        dim: width of the vectors.
        bits: the full codebook has ``2**bits`` vectors (2 <= bits <= 24); or give
            ``codebook_size`` instead (vector-quantize-pytorch's keyword).
        codebook_size: the full size ``2**bits``, a power of two in ``[4, 2**24]``.
        gradient: ``"nsvq"``, ``"straight_through"`` or ``"none"`` (see above).
        start_bits: initial size ``2**start_bits`` (2 <= start_bits <= bits).
        grow_every: training steps at each size before doubling (a positive int), or
            ``None`` for no automatic growth. The default, 100, reaches 64 vectors from
            4 in 400 steps (the sizes were measured in ``benchmarks/vq_swap.py``).
        expand_eps: spacing of the new vertices in :meth:`expand`, in (0, 0.5).
        accept_image_fmap: take and return image feature maps ``(B, dim, H, W)`` (see above).
        channel_last: ``False`` for inputs ``(B, dim, ...)`` with the channel second (see above).
        sync_codebook: sum usage counts over ranks and broadcast the starting curve.
        freeze_codebook: ``weight.requires_grad`` off (see above; also a settable property).

    Raises:
        ValueError: a bad setting or input, naming the argument.
        TypeError: an argument of the wrong type (a non-float input, a non-bool switch).
    """

    def __init__(self, dim: int, bits: int | None = None, *, codebook_size: int | None = None,
                 gradient: str = "nsvq", start_bits: int = 2, grow_every: int | None = 100,
                 expand_eps: float = 0.01, accept_image_fmap: bool = False, channel_last: bool = True,
                 sync_codebook: bool = False, freeze_codebook: bool = False, device=None, dtype=None):
        super().__init__()
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise ValueError(f"SFVQ: dim must be a positive int, got {dim!r}")
        bits = _bits_from(bits, codebook_size)
        if grow_every is not None and (not isinstance(grow_every, int) or isinstance(grow_every, bool)
                                       or grow_every < 1):
            raise ValueError(f"SFVQ: grow_every must be a positive int (training steps per size) or None, "
                             f"got {grow_every!r}")
        if not isinstance(start_bits, int) or not 2 <= start_bits <= bits:
            raise ValueError(f"SFVQ: start_bits must be an int in [2, bits={bits}], got {start_bits!r}")
        if gradient not in GRADIENT_MODES:
            raise ValueError(f"SFVQ: gradient must be one of {GRADIENT_MODES}, got {gradient!r}")
        if not isinstance(expand_eps, (int, float)) or not 0 < expand_eps < 0.5:
            raise ValueError(f"SFVQ: expand_eps must be in (0, 0.5), got {expand_eps!r}")
        for name, value in (("accept_image_fmap", accept_image_fmap), ("channel_last", channel_last),
                            ("sync_codebook", sync_codebook), ("freeze_codebook", freeze_codebook)):
            if not isinstance(value, bool):
                raise TypeError(f"SFVQ: {name} must be a bool, got {value!r}")
        self.dim, self.bits, self.start_bits = dim, bits, start_bits
        self.gradient, self.expand_eps = gradient, float(expand_eps)
        self.accept_image_fmap, self.channel_last = accept_image_fmap, channel_last
        self.sync_codebook, self.grow_every = sync_codebook, grow_every
        self.weight = nn.Parameter(torch.zeros(2**bits, dim, device=device, dtype=dtype),
                                   requires_grad=not freeze_codebook)
        self.register_buffer("segment_counts", torch.zeros(2**bits - 1, dtype=torch.int64, device=device))
        self.register_buffer("curve_size", torch.tensor(2**start_bits, dtype=torch.int64, device=device))
        self.register_buffer("curve_initialized", torch.tensor(False, device=device))
        self.register_buffer("rng_state", torch.zeros(4, dtype=torch.int64, device=device))
        self.register_buffer("stage_steps", torch.tensor(0, dtype=torch.int64, device=device))
        # What forward reads from the buffers above, cached with the buffers' identity
        # and version so that eager calls re-read them (one host copy) only after a
        # swap or an outside write; a compiled graph specialises on these ints.
        self._size, self._initialized, self._seeded = 2**start_bits, False, False
        self._state_key: tuple = ()
        # rng_state of recent seeded training forwards, for checkpointing's recompute.
        self._replay = _Replay()
        self._generator: torch.Generator | None = None
        # an OrderedDict, not a dict: RemovableHandle holds a weak reference to it
        self._expand_hooks: OrderedDict[int, Callable[[SFVQ], None]] = OrderedDict()
        # Per-stage records of sfvq_ext.fit (loss, perplexity, ...); saved with the curve.
        self.history: list[dict] = []

    # -- state -------------------------------------------------------------

    # -- the state forward reads (from the tensors, see _curve_state) -------

    def _buffers_key(self) -> tuple:
        return tuple((t, t._version) for t in (self.curve_size, self.curve_initialized, self.rng_state))

    def _curve_state(self) -> tuple[int, bool, bool]:
        """``(size, initialized, seeded)`` as the buffers hold them now. Eager calls
        re-read the buffers when one was swapped (``functional_call``, ``.to()``) or
        written from outside (``copy_``, DDP's broadcast); compiled code reads the
        cached ints, on which the graph is guarded."""
        if torch.compiler.is_compiling() or self.curve_size.is_meta:  # (meta: a module built for deferred init)
            return self._size, self._initialized, self._seeded
        key = self._buffers_key()
        if len(key) != len(self._state_key) or any(a is not b or va != vb for (a, va), (b, vb)
                                                   in zip(key, self._state_key)):
            size, initialized, seeded = torch.stack([self.curve_size.reshape(()).to(torch.int64),
                                                     self.curve_initialized.reshape(()).to(torch.int64),
                                                     self.rng_state[0].to(torch.int64)]).tolist()
            rows = self.weight.shape[0]
            if size < 4 or size > rows or size & (size - 1):
                raise ValueError(f"SFVQ: buffer 'curve_size' holds {size}; expected a power of two in [4, {rows}] "
                                 f"(the rows of 'weight'). Was it written from outside, or averaged? An EMA copy "
                                 f"(AveragedModel) must copy the buffers: keep use_buffers=False")
            self._size, self._initialized, self._seeded = size, bool(initialized), bool(seeded)
            self._state_key = key
        return self._size, self._initialized, self._seeded

    def _remember_state(self) -> None:
        """After the module's own write to a buffer: the cached ints are current."""
        self._state_key = self._buffers_key()

    @property
    def codebook(self) -> Tensor:
        """The curve in use, ``(current_codebook_size, dim)``: a view of ``weight``."""
        return self.weight[: self._curve_state()[0]]

    @codebook.setter
    def codebook(self, codebook: Tensor) -> None:
        self.set_codebook(codebook)

    @property
    def codebook_size(self) -> int:
        """The configured (full) size ``2**bits``, as vector-quantize-pytorch's ``codebook_size``."""
        return 2**self.bits

    @property
    def current_codebook_size(self) -> int:
        """The number of codebook vectors in use now (grows to :attr:`codebook_size`)."""
        return self._curve_state()[0]

    @property
    def current_bits(self) -> int:
        return self.current_codebook_size.bit_length() - 1

    @property
    def initialized(self) -> bool:
        return self._curve_state()[1]

    @property
    def freeze_codebook(self) -> bool:
        """Whether the codebook is frozen: ``weight.requires_grad`` is off. Settable."""
        return not self.weight.requires_grad

    @freeze_codebook.setter
    def freeze_codebook(self, frozen: bool) -> None:
        if not isinstance(frozen, bool):
            raise TypeError(f"SFVQ.freeze_codebook must be a bool, got {frozen!r}")
        self.weight.requires_grad_(not frozen)

    @property
    def segment_usage(self) -> Tensor:
        """Training hits per segment since the last :meth:`reset_usage` (or expansion),
        int64 ``(current_codebook_size - 1,)``; summed over ranks with ``sync_codebook``."""
        return self.segment_counts[: self.current_codebook_size - 1]

    @property
    def perplexity(self) -> float:
        """``exp(entropy)`` of :attr:`segment_usage`: the effective number of segments in use (nan before any hit)."""
        counts = self.segment_usage.double()
        total = counts.sum()
        if total == 0:
            return math.nan
        p = counts[counts > 0] / total
        return math.exp(-(p * p.log()).sum().item())

    def reset_usage(self) -> None:
        self.segment_counts.zero_()

    @torch.no_grad()
    def _set_curve(self, size: int, initialized: bool) -> None:
        """A new curve size (or state): a new growth stage starts."""
        self._curve_state()  # the seeded flag as the buffers hold it
        self._size, self._initialized = int(size), bool(initialized)
        self.curve_size.fill_(self._size)
        self.curve_initialized.fill_(self._initialized)
        self.stage_steps.zero_()
        self._remember_state()

    @torch.no_grad()
    def set_codebook(self, codebook: Tensor) -> None:
        """Use ``codebook`` ``(K, dim)`` (K a power of two in ``[4, 2**bits]``, finite) as the
        curve: the module becomes initialised at size K; usage counts are reset."""
        if not isinstance(codebook, Tensor) or not codebook.is_floating_point():
            raise TypeError(f"SFVQ.set_codebook: codebook must be a floating-point tensor, got "
                            f"{codebook.dtype if isinstance(codebook, Tensor) else type(codebook).__name__}")
        K = codebook.shape[0] if codebook.dim() == 2 else 0
        if codebook.dim() != 2 or codebook.shape[1] != self.dim or K < 4 or K > 2**self.bits or K & (K - 1):
            raise ValueError(f"SFVQ.set_codebook: codebook must have shape (K, {self.dim}) with K a power of two "
                             f"in [4, {2**self.bits}], got {tuple(codebook.shape)}")
        if not torch.isfinite(codebook).all():
            raise ValueError("SFVQ.set_codebook: codebook contains NaN or Inf")
        # a copy first: codebook may be a view of weight itself (vq.codebook = vq.codebook)
        values = torch.zeros_like(self.weight)
        values[:K] = codebook.detach().to(self.weight)
        self.weight.copy_(values)  # one write: a refused one (a sharded weight) leaves the old curve
        self._set_curve(K, True)
        self.reset_usage()

    @torch.no_grad()
    def reset_codebook(self) -> None:
        """Back to the state of a new module: zero weight, size ``2**start_bits``,
        uninitialised (the next training batch starts a new curve), no counts."""
        self.weight.zero_()
        self._set_curve(2**self.start_bits, False)
        self.reset_usage()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        size_key, flag_key, rng_key = prefix + "curve_size", prefix + "curve_initialized", prefix + "rng_state"
        legacy = state_dict.pop(prefix + "_extra_state", None)  # written before the state was all tensors
        if isinstance(legacy, dict) and {"size", "initialized"} <= legacy.keys():
            state_dict.setdefault(size_key, torch.tensor(int(legacy["size"])))
            state_dict.setdefault(flag_key, torch.tensor(bool(legacy["initialized"])))
            state_dict.setdefault(rng_key, self.rng_state.clone())  # those files had no RNG state
        elif legacy is not None:
            error_msgs.append(f"SFVQ '{prefix}': unrecognised '_extra_state' {legacy!r}")
            return
        if prefix + "weight" in state_dict or size_key in state_dict:  # written before automatic growth
            state_dict.setdefault(prefix + "stage_steps", torch.zeros((), dtype=torch.int64))
        has_curve = size_key in state_dict and flag_key in state_dict
        has_weight = prefix + "weight" in state_dict
        errors_before = len(error_msgs)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if len(error_msgs) > errors_before:
            return
        self._replay.clear()
        if has_curve:
            size = int(self.curve_size)
            if size < 4 or size > 2**self.bits or size & (size - 1):
                error_msgs.append(f"SFVQ '{prefix}': '{size_key}' is {size}, expected a power of two in "
                                  f"[4, {2**self.bits}]")
                return
            self._curve_state()
        elif has_weight:
            self._infer_curve_from_weight(prefix)

    def _infer_curve_from_weight(self, prefix: str) -> None:
        """A weight loaded without the curve's size: rows past the curve are zero (they
        always are in this module), so the last non-zero row bounds the size."""
        rows = self.weight.detach().ne(0).any(dim=1).nonzero()
        if len(rows) == 0:
            self._set_curve(2**self.start_bits, False)
            return
        last = int(rows.max()) + 1
        size = max(4, 1 << (last - 1).bit_length())
        self._set_curve(size, True)
        warnings.warn(f"SFVQ '{prefix}': the loaded state has a weight but no '{prefix}curve_size' / "
                      f"'{prefix}curve_initialized' (a partial or older state dict); its non-zero rows end at "
                      f"row {last - 1}, so the module is initialised with current_codebook_size {size}",
                      stacklevel=_user_stacklevel())

    def extra_repr(self) -> str:
        flags = [name for name in ("accept_image_fmap", "sync_codebook", "freeze_codebook") if getattr(self, name)]
        flags += [] if self.channel_last else ["channel_last=False"]
        size, initialized, _ = self._curve_state()
        return (f"dim={self.dim}, codebook_size={self.codebook_size}, current_codebook_size={size}, "
                f"grow_every={self.grow_every}, gradient={self.gradient!r}"
                + "".join(f", {f}" for f in flags) + ("" if initialized else ", uninitialized"))

    def __getstate__(self) -> dict:
        """Pickling (``torch.save`` of a model, ``spawn``, ``deepcopy``) leaves out the
        ``torch.Generator`` the stream was seeded from: the stream lives in ``rng_state``
        (as after loading a state dict), and a Generator cannot cross ``spawn``. The
        expand hooks are left out too: they hold the training loop's objects (its
        optimizer), which a copy does not belong to."""
        return {**super().__getstate__(), "_generator": None, "_state_key": (), "_replay": [],
                "_expand_hooks": OrderedDict()}

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        # a module pickled before automatic growth and the state read from tensors
        self.__dict__.setdefault("grow_every", None)
        self.__dict__.setdefault("_state_key", ())
        self._replay = _Replay()  # a copy is in no checkpointed region ("_replay" pickled as [], as before)
        self.__dict__.setdefault("_expand_hooks", OrderedDict())
        if "stage_steps" not in self._buffers:
            self.register_buffer("stage_steps", torch.zeros((), dtype=torch.int64, device=self.curve_size.device))

    # -- randomness --------------------------------------------------------

    @property
    def generator(self) -> torch.Generator | None:
        """The ``torch.Generator`` last assigned, or ``None``.

        Assigning a generator takes a 64-bit key from it (one draw) and starts the
        module's own counter-based stream (:func:`hash_uniform`, state in ``rng_state``);
        the generator itself is not used again. Assigning ``None`` returns to torch's
        global RNG. A stream loaded with a state dict runs on with ``generator`` None:
        :attr:`seeded` says which RNG is in use."""
        return self._generator

    @property
    def seeded(self) -> bool:
        """Whether the dither and noise come from the module's own stream (else the global RNG)."""
        return self._curve_state()[2]

    @generator.setter
    def generator(self, generator: torch.Generator | None) -> None:
        if generator is None:
            self._curve_state()
            self._replay.clear()
            with torch.no_grad():
                self.rng_state.zero_()
            self._generator, self._seeded = None, False
            self._remember_state()
            return
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"SFVQ.generator must be a torch.Generator or None, got {type(generator).__name__}")
        self._curve_state()
        self._replay.clear()
        key = torch.randint(0, 2**32, (2,), generator=generator, dtype=torch.int64, device=generator.device)
        with torch.no_grad():
            self.rng_state.copy_(torch.cat([torch.ones(1, dtype=torch.int64), key.cpu(),
                                            torch.zeros(1, dtype=torch.int64)]).to(self.rng_state.device))
        self._generator, self._seeded = generator, True
        self._remember_state()

    def manual_seed(self, seed: int) -> SFVQ:
        """Seed the module's own random stream (``generator = torch.Generator().manual_seed(seed)``); returns self."""
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"SFVQ.manual_seed: seed must be an int, got {seed!r}")
        self.generator = torch.Generator().manual_seed(seed)
        return self

    def _dither(self, K: int, like: Tensor, stream_state: Tensor | None) -> Tensor:
        if stream_state is not None:
            return hash_uniform(stream_state, K - 1, _DITHER_STREAM).to(like.dtype)
        return torch.rand(K - 1, device=like.device, dtype=like.dtype)

    def _noise(self, like: Tensor, stream_state: Tensor | None) -> Tensor:
        if stream_state is not None:
            rank = dist.get_rank() if _distributed() else 0
            return _hash_normal(stream_state, like.numel(), salt=rank).reshape(like.shape).to(like.dtype)
        return torch.randn_like(like)

    def _stream_state(self, recomputing: bool) -> Tensor:
        """The ``rng_state`` a seeded module's forward draws from: the current one, or
        for a recomputation the one its original forward used (:class:`_Replay`).
        (Unseeded modules use the global RNG, which checkpointing restores itself.)"""
        return self._replay.take() if recomputing else self.rng_state

    # -- growth ------------------------------------------------------------

    @_compiler_disable
    @torch.no_grad()
    def initialize(self, sample: Tensor) -> None:
        """Set the starting curve from ``sample`` ``(n, dim)`` (or any ``(..., dim)``),
        n >= 4: the norm-quartile means (:func:`sfvq_ext.init_codebook`), expanded to
        ``2**start_bits`` vectors. With ``sync_codebook`` and a process group, rank 0's
        curve is broadcast (every rank must call this); otherwise no collective."""
        if not isinstance(sample, Tensor) or not sample.is_floating_point():
            raise TypeError(f"SFVQ.initialize: sample must be a floating-point tensor, got "
                            f"{sample.dtype if isinstance(sample, Tensor) else type(sample).__name__}")
        if sample.dim() < 1 or sample.shape[-1] != self.dim:
            raise ValueError(f"SFVQ.initialize: sample must have shape (n, {self.dim}), got {tuple(sample.shape)}")
        rows = sample.detach().reshape(-1, self.dim)
        _check_start_sample(rows, "SFVQ.initialize", "sample", "")
        codebook = ops.init_codebook(rows.to(self.weight.dtype))
        while codebook.shape[0] < 2**self.start_bits:
            codebook = ops.expand(codebook, self.expand_eps)
        codebook = codebook.to(self.weight.device)
        if self.sync_codebook and _distributed():
            dist.broadcast(codebook, src=0)
        self.set_codebook(codebook)

    @_compiler_disable
    def _initialize_from_batch(self, x: Tensor) -> None:
        if self.weight.detach().any():
            raise RuntimeError(
                "SFVQ.forward: the module is marked uninitialised but its weight holds values (set by hand, "
                "or loaded without 'curve_size'/'curve_initialized'?); the first batch would overwrite them. "
                "Call set_codebook(weight[:K]) to use them, or reset_codebook() to start from this batch")
        if self.sync_codebook is False and _distributed() and dist.get_world_size() > 1:
            warnings.warn("SFVQ: initialising from this rank's batch with sync_codebook=False while torch.distributed "
                          "runs several ranks: each rank starts its own curve (pass sync_codebook=True under "
                          "DistributedDataParallel)", stacklevel=_user_stacklevel())
        rows = x.detach().reshape(-1, self.dim)
        _check_start_sample(rows, "SFVQ.forward", "x", " (the first training batch starts the curve: give it 4 "
                            "or more finite rows, or call initialize(sample) before training)")
        self.initialize(rows)

    @torch.no_grad()
    def expand(self, eps: float | None = None) -> None:
        """Double the codebook without changing the curve's shape (:func:`sfvq_ext.expand`).
        Resets the usage counts and ``stage_steps``, then calls the expand hooks
        (:meth:`register_expand_hook`). Called by automatic growth (``grow_every``) or
        by hand. A gradient accumulated in ``weight.grad`` (gradient accumulation over
        micro-batches) grows by the same linear map as the curve, so a step after the
        doubling equals the step before it, then the doubling (SGD; up to rounding).
        Optimizer state for ``weight`` keeps its shape but belongs to the old
        vertices (see "Growth" on :class:`SFVQ` for what to do with it).
        Deterministic: ranks that agree before agree after, with no collective."""
        if not self.initialized:
            raise RuntimeError("SFVQ.expand: the codebook is not initialised yet (train on a batch or call initialize)")
        if self.current_codebook_size >= 2**self.bits:
            raise ValueError(f"SFVQ.expand: the codebook already has its full size 2**bits = {2**self.bits}")
        eps = self.expand_eps if eps is None else eps
        size = self.current_codebook_size
        self.weight[: 2 * size] = ops.expand(self.codebook, eps)
        grad = self.weight.grad
        if grad is not None:
            # Each new row is a fixed mix of old ones (ops.expand is linear), so is its gradient. A
            # non-finite one (a float16 overflow, which GradScaler then skips) stays non-finite.
            old = grad[:size]
            grad[: 2 * size] = ops.expand(old, eps) if bool(torch.isfinite(old).all()) else float("nan")
        self._set_curve(2 * size, True)
        self.reset_usage()
        for hook in list(self._expand_hooks.values()):
            hook(self)

    def register_expand_hook(self, hook: Callable[[SFVQ], None]) -> RemovableHandle:
        """Call ``hook(module)`` after every doubling of the curve, automatic or by
        :meth:`expand`, once ``codebook`` has its new size; returns a handle whose
        ``remove()`` unregisters it. Hooks run in the order registered, eagerly (also
        when the forward is compiled: growth runs between graphs) and under
        ``torch.no_grad()``. The use it exists for: start the optimizer's state for the
        codebook afresh, which trains better than keeping the old vertices' moments
        (measured in ``benchmarks/vq_swap.py``)::

            vq.register_expand_hook(lambda vq: optimizer.state.pop(vq.weight, None))

        Hooks belong to the process that registered them: pickling, ``deepcopy`` and
        ``spawn`` leave them out (as ``torch.Generator`` is left out).

        Raises:
            TypeError: ``hook`` is not callable.
        """
        if not callable(hook):
            raise TypeError(f"SFVQ.register_expand_hook: hook must be callable, got {type(hook).__name__}")
        handle = RemovableHandle(self._expand_hooks)
        self._expand_hooks[handle.id] = hook
        return handle

    @_compiler_disable
    def _grow_if_due(self) -> None:
        """Automatic growth: double the curve after ``grow_every`` training steps at one size."""
        if int(self.stage_steps) >= self.grow_every:
            self.expand()

    # -- layout ------------------------------------------------------------

    @property
    def _channel_second(self) -> bool:
        return self.accept_image_fmap or not self.channel_last

    def _to_channel_last(self, x: Tensor, where: str) -> Tensor:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"SFVQ.{where}: x must be a floating-point tensor, got "
                            f"{x.dtype if isinstance(x, Tensor) else type(x).__name__}")
        if self.accept_image_fmap:
            if x.dim() != 4 or x.shape[1] != self.dim:
                raise ValueError(f"SFVQ.{where}: with accept_image_fmap=True, x must be an image feature map "
                                 f"(B, {self.dim}, H, W), got {tuple(x.shape)}")
            return x.movedim(1, -1)
        if not self.channel_last:
            if x.dim() < 2 or x.shape[1] != self.dim:
                raise ValueError(f"SFVQ.{where}: with channel_last=False, x must have shape (B, {self.dim}, ...), "
                                 f"got {tuple(x.shape)}")
            return x.movedim(1, -1)
        if x.dim() < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"SFVQ.{where}: x must have shape (..., {self.dim}), got {tuple(x.shape)}")
        return x

    def _from_channel_last(self, out: Tensor) -> Tensor:
        return out.movedim(-1, 1) if self._channel_second and out.dim() >= 2 else out

    def _require_initialized(self, where: str) -> None:
        if not self.initialized:
            raise RuntimeError(f"SFVQ.{where}: the codebook is not initialised "
                               "(train on a batch, call initialize(sample) or set_codebook, or load a fitted curve)")

    # -- quantization ------------------------------------------------------

    def forward(self, x: Tensor, *, freeze_codebook: bool | None = None, return_coords: bool = False):
        """Quantize ``x`` (layout per ``accept_image_fmap`` / ``channel_last``).

        Returns ``(quantized, indices, loss)``, plus ``coords`` when ``return_coords``;
        see the class docstring for shapes, dtypes and modes. ``freeze_codebook=True``
        detaches the codebook for this call (a frozen ``weight`` gets no gradient
        whatever this says). Raises ``TypeError`` for a non-float ``x``, ``ValueError``
        for a wrong shape or a NaN/Inf row, and ``RuntimeError`` in eval mode (or
        frozen) before the codebook is initialised."""
        frozen = self.freeze_codebook if freeze_codebook is None else freeze_codebook
        h = self._to_channel_last(x, "forward")
        size, initialized, _ = self._curve_state()
        # activation checkpointing runs this forward again inside the backward pass
        recomputing = (self.training and not torch.compiler.is_compiling()
                       and torch._C._current_graph_task_id() != -1)
        if not initialized:
            if not self.training or frozen or recomputing:
                self._require_initialized("forward" if not self.training else "forward (frozen codebook)")
            self._initialize_from_batch(h)  # training on the first batch: start the curve from it
        elif (self.training and not recomputing and self.grow_every is not None
              and size < self.codebook_size):
            self._grow_if_due()
        size, _, seeded = self._curve_state()  # as a start or a growth just left them
        codebook = self.weight[:size].detach() if frozen else self.weight[:size]
        # search in the wider dtype: the codebook's precision must not round the inputs
        compute = torch.promote_types(h.dtype, codebook.dtype)
        xf, codebook = h.to(compute), codebook.to(compute)
        wide = torch.float64 if compute == torch.float64 else torch.float32
        if self.training:
            K = codebook.shape[0]
            stream = self._stream_state(recomputing) if seeded else None
            dither = self._dither(K, codebook, stream)
            q, indices = ops.dithered_quantize(xf, codebook, dither)
            coords = indices.to(wide) + dither.detach().to(wide)[indices] if return_coords else None
            out = self._output(xf, q, stream)
            if not recomputing:
                self._end_step(indices, K, seeded)
        else:
            projection = ops.project(xf, codebook)
            q, indices, coords = projection.point, projection.segment, projection.coord
            out = self._output(xf, q, None)
        loss = (xf.to(wide) - q.to(wide)).square().mean()
        out = self._from_channel_last(out.to(x.dtype))
        if return_coords:
            return out, indices, loss, coords
        return out, indices, loss

    def _output(self, xf: Tensor, q: Tensor, stream: Tensor | None) -> Tensor:
        """What ``forward`` returns for the quantized points ``q`` of ``xf`` (``gradient=``)."""
        if self.gradient == "straight_through":
            return xf + (q - xf).detach()
        if self.gradient == "nsvq" and self.training:
            noise = self._noise(xf, stream)
            # vector_norm's gradient at 0 is 0, so x == q gives a finite gradient
            scale = torch.linalg.vector_norm(xf - q, dim=-1, keepdim=True) / torch.linalg.vector_norm(noise, dim=-1, keepdim=True)
            return xf + scale * noise
        return q

    def _end_step(self, indices: Tensor, K: int, seeded: bool) -> None:
        """A training step's side effects, once per step (never in a recomputation):
        its rows counted, the stream advanced, the step counted toward growth."""
        with torch.no_grad():
            flat = indices.reshape(-1)
            step_counts = torch.zeros(K - 1, dtype=torch.int64, device=flat.device).index_add_(
                0, flat, torch.ones_like(flat))
            if self.sync_codebook and _distributed():
                dist.all_reduce(step_counts)
            self.segment_counts[: K - 1] += step_counts
            self.stage_steps.add_(1)
            if seeded:
                if not torch.compiler.is_compiling():
                    self._replay.record(self.rng_state)
                self.rng_state[3:].add_(1)
                if not torch.compiler.is_compiling():
                    self._remember_state()

    def project(self, x: Tensor, mode: str = "exact") -> ops.Projection:
        """Exact nearest points on the curve (:func:`sfvq_ext.project`) of ``x`` ``(..., dim)``
        (channel last, whatever the layout switches say): point, segment, t, coord, dist."""
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"SFVQ.project: x must be a floating-point tensor, got "
                            f"{x.dtype if isinstance(x, Tensor) else type(x).__name__}")
        if x.dim() < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"SFVQ.project: x must have shape (..., {self.dim}), got {tuple(x.shape)}")
        self._require_initialized("project")
        compute = torch.promote_types(x.dtype, self.weight.dtype)
        return ops.project(x.to(compute), self.codebook.to(compute), mode)

    def decode(self, coord: Tensor) -> Tensor:
        """Points at curve coordinates ``coord`` (any shape) -> ``(*coord.shape, dim)`` (:func:`sfvq_ext.decode`)."""
        self._require_initialized("decode")
        return ops.decode(coord, self.codebook)

    def get_codes_from_indices(self, indices: Tensor) -> Tensor:
        """The point a segment index stands for: the midpoint ``(c_i + c_{i+1}) / 2`` of
        segment ``i`` (the mean of the dithered points training picks on it).

        ``indices``: an integer tensor with values in ``[0, current_codebook_size - 2]``, in the
        layout ``forward`` returns them. Returns the codebook's dtype, shape
        ``(*indices.shape, dim)``, or ``(B, dim, ...)`` with ``accept_image_fmap`` /
        ``channel_last=False`` (as vector-quantize-pytorch). Lossy: the position along
        the segment is not in the index; use :meth:`get_output_from_coords` for that."""
        self._require_initialized("get_codes_from_indices")
        if not isinstance(indices, Tensor) or indices.is_floating_point() or indices.is_complex() \
                or indices.dtype == torch.bool:
            raise TypeError(f"SFVQ.get_codes_from_indices: indices must be an integer tensor, got "
                            f"{indices.dtype if isinstance(indices, Tensor) else type(indices).__name__}")
        K = self.current_codebook_size
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) > K - 2):
            raise ValueError(f"SFVQ.get_codes_from_indices: indices must be segment indices in [0, {K - 2}], "
                             f"got values in [{int(indices.min())}, {int(indices.max())}]")
        c = self.codebook
        i = indices.long()
        return self._from_channel_last((c[i] + c[i + 1]) * 0.5)

    def get_output_from_indices(self, indices: Tensor) -> Tensor:
        """Same as :meth:`get_codes_from_indices` (SFVQ has no output projection)."""
        return self.get_codes_from_indices(indices)

    def get_output_from_coords(self, coords: Tensor) -> Tensor:
        """The points at curve coordinates ``coords`` (``forward(..., return_coords=True)``'s
        fourth output, or :meth:`project`'s ``coord``): ``(1 - f) c_j + f c_{j+1}`` with
        ``j = min(floor(u), K-2)``, ``f = u - j``, ``u`` clamped to ``[0, K-1]``
        (:func:`sfvq_ext.decode`). Shape ``(*coords.shape, dim)``, or ``(B, dim, ...)``
        with ``accept_image_fmap`` / ``channel_last=False``; the codebook's dtype.
        Raises ``TypeError`` for a non-float tensor, ``ValueError`` for NaN."""
        self._require_initialized("get_output_from_coords")
        if not isinstance(coords, Tensor) or not coords.is_floating_point():
            raise TypeError(f"SFVQ.get_output_from_coords: coords must be a floating-point tensor, got "
                            f"{coords.dtype if isinstance(coords, Tensor) else type(coords).__name__}")
        return self._from_channel_last(ops.decode(coords, self.codebook))
