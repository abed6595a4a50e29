"""Stand-in for NVlabs torch_utils/ops/filtered_lrelu.py (test helper): upsample,
leaky ReLU, low-pass and downsample, in plain PyTorch."""

import math

import torch
import torch.nn.functional as F


def filtered_lrelu(x, b=None, up=2, down=2, slope=0.2, gain=math.sqrt(2)):
    if b is not None:
        x = x + b.reshape(1, -1, 1, 1)
    x = F.interpolate(x, scale_factor=up, mode="bilinear", align_corners=False)
    x = F.leaky_relu(x, slope) * gain
    return F.avg_pool2d(x, down)
