"""Stand-in for stylegan3 training/networks_stylegan3.py (test helper, written for
these tests): a tiny alias-free-style generator -- Fourier-feature input moved by
w, modulated 1x1 convolutions, the clone's own ``filtered_lrelu`` op -- with the
same NVlabs interface as StyleGAN2-ADA (mapping / synthesis / num_ws / w_avg)."""

import math

import numpy as np
import torch
from torch_utils import persistence
from torch_utils.ops import filtered_lrelu


def normalize_2nd_moment(x, eps=1e-8):
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


@persistence.persistent_class
class FullyConnectedLayer(torch.nn.Module):
    def __init__(self, in_features, out_features, activation="linear", bias_init=0.0, weight_init=1.0):
        super().__init__()
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn(out_features, in_features) * weight_init / np.sqrt(in_features))
        self.bias = torch.nn.Parameter(torch.as_tensor(np.broadcast_to(np.float32(bias_init), [out_features]).copy()))

    def forward(self, x):
        x = x @ self.weight.t() + self.bias
        return torch.nn.functional.leaky_relu(x, 0.2) * math.sqrt(2) if self.activation == "lrelu" else x


@persistence.persistent_class
class MappingNetwork(torch.nn.Module):
    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=2):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, c_dim, w_dim, num_ws, num_layers
        self.embed = FullyConnectedLayer(c_dim, w_dim) if c_dim else None
        features = [z_dim + (w_dim if c_dim else 0)] + [w_dim] * num_layers
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnectedLayer(features[i], features[i + 1], activation="lrelu"))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        x = normalize_2nd_moment(z)
        if self.c_dim:
            x = torch.cat([x, normalize_2nd_moment(self.embed(c))], dim=1)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            x[:, :cutoff] = self.w_avg.lerp(x[:, :cutoff], truncation_psi)
        return x


@persistence.persistent_class
class SynthesisInput(torch.nn.Module):
    """Fourier features on a size x size grid, translated by an affine function of w."""

    def __init__(self, w_dim, channels, size):
        super().__init__()
        self.size = size
        self.affine = FullyConnectedLayer(w_dim, 2, weight_init=0.5)
        self.register_buffer("freqs", torch.randn(channels, 2))
        self.register_buffer("phases", torch.rand(channels) - 0.5)

    def forward(self, w):
        shift = self.affine(w)  # (n, 2)
        line = (torch.arange(self.size, dtype=torch.float32) + 0.5) / self.size - 0.5
        grid = torch.stack(torch.meshgrid(line, line, indexing="ij"), dim=-1)  # (size, size, 2)
        grid = grid.unsqueeze(0) + shift[:, None, None, :]
        x = torch.sin(2 * math.pi * (grid @ self.freqs.t() + self.phases))
        return x.permute(0, 3, 1, 2)


@persistence.persistent_class
class SynthesisLayer(torch.nn.Module):
    def __init__(self, w_dim, in_channels, out_channels):
        super().__init__()
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = torch.nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = torch.nn.Parameter(torch.zeros(out_channels))

    def forward(self, x, w, noise_mode="random", force_fp32=False, update_emas=False):
        styles = self.affine(w)
        x = torch.nn.functional.conv2d(x * styles[:, :, None, None], self.weight) / math.sqrt(x.shape[1])
        return filtered_lrelu.filtered_lrelu(x, self.bias)


@persistence.persistent_class
class SynthesisNetwork(torch.nn.Module):
    def __init__(self, w_dim, img_resolution, img_channels, channels=8, num_layers=3):
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.num_ws = num_layers + 2
        self.input = SynthesisInput(w_dim, channels, img_resolution)
        self.layers = torch.nn.ModuleList(SynthesisLayer(w_dim, channels, channels) for _ in range(num_layers))
        self.torgb = SynthesisLayer(w_dim, channels, img_channels)

    def forward(self, ws, **layer_kwargs):
        assert ws.shape[1:] == (self.num_ws, self.w_dim), ws.shape
        ws = ws.to(torch.float32).unbind(dim=1)
        x = self.input(ws[0])
        for layer, w in zip(self.layers, ws[1:]):
            x = layer(x, w, **layer_kwargs)
        styles = self.torgb.affine(ws[-1])
        return torch.nn.functional.conv2d(x * styles[:, :, None, None], self.torgb.weight) + self.torgb.bias[:, None, None]


@persistence.persistent_class
class Generator(torch.nn.Module):
    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs={}, **synthesis_kwargs):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False, **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)


@persistence.persistent_class
class Discriminator(torch.nn.Module):
    def __init__(self, c_dim, img_resolution, img_channels):
        super().__init__()
        self.out = FullyConnectedLayer(img_channels * img_resolution ** 2, 1)

    def forward(self, img, c):
        return self.out(img.flatten(1))
