"""Stand-in for NVlabs torch_utils/ops/bias_act.py (test helper)."""

import math

import torch

NEGATIVE_SLOPE = 0.2


def bias_act(x, b=None, act="linear", gain=None):
    """Add a per-channel bias (dim 1), then the activation: ``linear`` or ``lrelu``
    (leaky ReLU with NEGATIVE_SLOPE, times ``gain``, default sqrt(2))."""
    if b is not None:
        x = x + b.reshape(1, -1, *([1] * (x.dim() - 2)))
    if act == "lrelu":
        x = torch.nn.functional.leaky_relu(x, NEGATIVE_SLOPE) * (math.sqrt(2) if gain is None else gain)
    return x
