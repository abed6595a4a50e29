"""A StyleGAN2 generator in plain PyTorch (MIT), written for this package.

The module and parameter names follow the layout of the widely used rosinality
``stylegan2-pytorch`` checkpoints (``g_ema`` state dicts), so those load into
:class:`Generator` directly; unlike that code it needs no compiled CUDA ops and
runs on CPU. The architecture is StyleGAN2's (Karras et al., 2020): a mapping
MLP with a learning-rate multiplier, a learned constant input, modulated /
demodulated 3x3 convolutions with noise injection, and ToRGB skip outputs added
up across resolutions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SQRT2 = math.sqrt(2.0)


def rosinality_channels(size: int, channel_multiplier: int = 2) -> dict[int, int]:
    """The channel count per resolution that rosinality's configs use."""
    widths = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier, 128: 128 * channel_multiplier,
              256: 64 * channel_multiplier, 512: 32 * channel_multiplier, 1024: 16 * channel_multiplier}
    return {r: c for r, c in widths.items() if r <= size}


def blur_kernel_2d(taps=(1, 3, 3, 1)) -> Tensor:
    """Separable low-pass kernel, normalised to sum 1."""
    k = torch.tensor(taps, dtype=torch.float32)
    k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(x: Tensor, kernel: Tensor, up: int = 1, pad: tuple[int, int] = (0, 0)) -> Tensor:
    """Upsample by zero insertion, pad (same on both axes; negative crops), then
    filter with ``kernel`` (a true convolution), channel by channel."""
    b, c, h, w = x.shape
    x = x.reshape(b * c, 1, h, w)
    if up > 1:
        x = x.reshape(b * c, 1, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(b * c, 1, h * up, w * up)
    p0, p1 = pad
    x = F.pad(x, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    x = x[:, :, max(-p0, 0) : x.shape[2] - max(-p1, 0), max(-p0, 0) : x.shape[3] - max(-p1, 0)]
    x = F.conv2d(x, kernel.flip([0, 1])[None, None].to(x.dtype))
    return x.reshape(b, c, x.shape[2], x.shape[3])


def leaky_relu_with_bias(x: Tensor, bias: Tensor) -> Tensor:
    """Add a per-channel bias, leaky ReLU (slope 0.2), rescale by sqrt(2) to keep the gain."""
    shape = [1, -1] + [1] * (x.dim() - 2)
    return F.leaky_relu(x + bias.view(shape), 0.2) * SQRT2


class PixelNorm(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with the weight scaled at run time (equalised learning rate)."""

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0, activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale, self.lr_mul, self.activate = lr_mul / math.sqrt(in_dim), lr_mul, activate

    def forward(self, x: Tensor) -> Tensor:
        if self.activate:
            return leaky_relu_with_bias(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class Blur(nn.Module):
    def __init__(self, pad: tuple[int, int], gain: float = 1.0):
        super().__init__()
        self.register_buffer("kernel", blur_kernel_2d() * gain)
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x upsampling with the blur kernel (ToRGB skip path)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("kernel", blur_kernel_2d() * 4)
        p = self.kernel.shape[0] - 2
        self.pad = ((p + 1) // 2 + 1, p // 2)

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, up=2, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Convolution whose weights are scaled per input channel by the style and,
    with ``demodulate``, renormalised per output channel; optional 2x upsampling
    (a transposed convolution followed by the blur)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, style_dim: int, demodulate: bool = True,
                 upsample: bool = False):
        super().__init__()
        self.in_ch, self.out_ch, self.kernel_size = in_ch, out_ch, kernel_size
        self.demodulate, self.upsample = demodulate, upsample
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(in_ch * kernel_size**2)
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)
        if upsample:
            p = (4 - 2) - (kernel_size - 1)
            self.blur = Blur(((p + 1) // 2 + 1, p // 2 + 1), gain=4.0)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        # Modulating the input channels and demodulating the output channels around
        # one shared convolution is the same linear map as convolving with per-sample
        # modulated weights, and far faster than a grouped convolution per sample.
        s = self.modulation(style)  # (b, in)
        weight = self.scale * self.weight[0]  # (out, in, k, k)
        x = x * s[:, :, None, None]
        if self.upsample:
            out = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2, padding=0)
        else:
            out = F.conv2d(x, weight, padding=self.kernel_size // 2)
        if self.demodulate:
            # norm of each sample's modulated filter: sum_i s_i^2 sum_k w_oik^2
            demod = torch.rsqrt(s.square() @ weight.square().sum(dim=(2, 3)).T + 1e-8)  # (b, out)
            out = out * demod[:, :, None, None]
        return self.blur(out) if self.upsample else out


class NoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, noise: Tensor | None) -> Tensor:
        if noise is None:
            noise = x.new_empty(x.shape[0], 1, x.shape[2], x.shape[3]).normal_()
        return x + self.weight * noise


class BiasedLeakyReLU(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return leaky_relu_with_bias(x, self.bias)


class StyledConv(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, style_dim: int, upsample: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, style_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = BiasedLeakyReLU(out_ch)

    def forward(self, x: Tensor, style: Tensor, noise: Tensor | None) -> Tensor:
        return self.activate(self.noise(self.conv(x, style), noise))


class ToRGB(nn.Module):
    def __init__(self, in_ch: int, style_dim: int, upsample: bool = True):
        super().__init__()
        if upsample:
            self.upsample = Upsample()
        self.conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: Tensor, style: Tensor, skip: Tensor | None = None) -> Tensor:
        out = self.conv(x, style) + self.bias
        return out if skip is None else out + self.upsample(skip)


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> Tensor:
        return self.input.expand(batch, -1, -1, -1)


class Generator(nn.Module):
    """StyleGAN2 generator with the NVlabs calling convention:
    ``mapping(z, c, truncation_psi) -> ws (n, num_ws, w_dim)``,
    ``synthesis(ws, noise_mode) -> images (n, 3, size, size)``; ``z_dim``, ``w_dim``,
    ``num_ws``, ``w_avg``.

    ``channels`` maps each resolution 4, 8, ..., ``size`` to its width (default:
    rosinality's widths for ``channel_multiplier``). There are ``num_ws = 2 *
    log2(size) - 2`` style inputs (W+ layers). ``w_avg`` (the truncation centre)
    is not part of the state dict: rosinality checkpoints keep it beside ``g_ema``
    as ``latent_avg``; set it with :meth:`set_w_avg`.
    """

    c_dim = 0

    def __init__(self, size: int, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                 lr_mlp: float = 0.01, channels: dict[int, int] | None = None):
        super().__init__()
        log_size = int(math.log2(size))
        if size < 4 or 2**log_size != size:
            raise ValueError(f"Generator: size must be a power of two >= 4, got {size}")
        channels = dict(channels or rosinality_channels(size, channel_multiplier))
        missing = [2**i for i in range(2, log_size + 1) if 2**i not in channels]
        if missing:
            raise ValueError(f"Generator: channels has no width for resolutions {missing}")
        self.size, self.style_dim, self.n_mlp, self.lr_mlp = size, style_dim, n_mlp, lr_mlp
        self.channels = {r: channels[r] for r in sorted(channels) if r <= size}
        self.style = nn.Sequential(PixelNorm(), *[EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activate=True)
                                                   for _ in range(n_mlp)])
        self.input = ConstantInput(self.channels[4])
        self.conv1 = StyledConv(self.channels[4], self.channels[4], style_dim)
        self.to_rgb1 = ToRGB(self.channels[4], style_dim, upsample=False)
        self.convs, self.to_rgbs = nn.ModuleList(), nn.ModuleList()
        self.noises = nn.Module()
        num_noises = (log_size - 2) * 2 + 1
        for i in range(num_noises):
            r = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, r, r))
        in_ch = self.channels[4]
        for i in range(3, log_size + 1):
            out_ch = self.channels[2**i]
            self.convs.append(StyledConv(in_ch, out_ch, style_dim, upsample=True))
            self.convs.append(StyledConv(out_ch, out_ch, style_dim))
            self.to_rgbs.append(ToRGB(out_ch, style_dim))
            in_ch = out_ch
        self.num_ws = log_size * 2 - 2
        self.z_dim = self.w_dim = style_dim
        self.img_resolution = size
        self.register_buffer("w_avg", torch.zeros(style_dim), persistent=False)

    @torch.no_grad()
    def set_w_avg(self, w_avg: Tensor | None = None, samples: int = 10_000, seed: int = 0) -> None:
        """Set the truncation centre: the given vector, or the mean w of ``samples`` seeded draws."""
        if w_avg is None:
            z = torch.randn(samples, self.z_dim, generator=torch.Generator().manual_seed(seed)).to(self.w_avg.device)
            w_avg = self.style(z).mean(dim=0)
        self.w_avg.copy_(w_avg.reshape(-1))

    def mapping(self, z: Tensor, c: Tensor | None = None, truncation_psi: float = 1.0) -> Tensor:
        """z (n, z_dim) -> ws (n, num_ws, w_dim), the same w for every layer; truncated
        towards ``w_avg`` by ``truncation_psi`` (1: none). ``c`` must be None (unconditional)."""
        if c is not None and c.numel() > 0:
            raise ValueError("Generator.mapping: this generator is unconditional; c must be None")
        w = self.style(z)
        if truncation_psi != 1.0:
            w = self.w_avg + truncation_psi * (w - self.w_avg)
        return w[:, None].expand(-1, self.num_ws, -1)

    def synthesis(self, ws: Tensor, noise_mode: str = "const", force_fp32: bool = True) -> Tensor:
        """ws: (n, style_dim) or W+ (n, num_ws, style_dim) -> images (n, 3, size, size).
        ``noise_mode="const"``: the stored noise maps (deterministic); ``"random"``: fresh
        noise. Always float32 (``force_fp32`` is accepted for the NVlabs convention)."""
        if ws.dim() == 2:
            ws = ws[:, None].expand(-1, self.num_ws, -1)
        if ws.shape[1:] != (self.num_ws, self.style_dim):
            raise ValueError(f"Generator.synthesis: ws must be (n, {self.style_dim}) or (n, {self.num_ws}, "
                             f"{self.style_dim}), got {tuple(ws.shape)}")
        if noise_mode not in ("const", "random"):
            raise ValueError(f"Generator.synthesis: noise_mode must be 'const' or 'random', got {noise_mode!r}")
        noise = [getattr(self.noises, f"noise_{i}") if noise_mode == "const" else None
                 for i in range(len(self.convs) + 1)]
        x = self.input(ws.shape[0])
        x = self.conv1(x, ws[:, 0], noise[0])
        skip = self.to_rgb1(x, ws[:, 1])
        for j, to_rgb in enumerate(self.to_rgbs):
            i = 2 * j + 1  # style index of the block's first convolution
            x = self.convs[2 * j](x, ws[:, i], noise[2 * j + 1])
            x = self.convs[2 * j + 1](x, ws[:, i + 1], noise[2 * j + 2])
            skip = to_rgb(x, ws[:, i + 2], skip)
        return skip

    def forward(self, z: Tensor, c: Tensor | None = None, truncation_psi: float = 1.0, noise_mode: str = "const") -> Tensor:
        return self.synthesis(self.mapping(z, c, truncation_psi), noise_mode)

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> "Generator":
        """Build a generator whose shape matches ``state`` (a rosinality ``g_ema``
        state dict or one of ours) and load it, strictly.

        Raises ``ValueError`` when keys are missing or unexpected, or when a
        parameter's shape differs from the one the derived architecture needs
        (the message names the parameter and both shapes)."""
        try:
            style_dim = state["style.1.weight"].shape[1]
            n_mlp = sum(1 for k in state if k.startswith("style.") and k.endswith(".weight"))
            size = 2 ** (len({k.split(".")[1] for k in state if k.startswith("to_rgbs.")}) + 2)
            channels = {4: state["input.input"].shape[1]}
            for i in range(3, int(math.log2(size)) + 1):
                channels[2**i] = state[f"convs.{2 * (i - 3)}.conv.weight"].shape[1]
        except (KeyError, IndexError, AttributeError) as err:
            raise ValueError(f"not a StyleGAN2 generator state dict in the rosinality layout (missing {err})") from err
        lr_mlp = 0.01  # rosinality's default; it is not stored in the state dict
        g = cls(size, style_dim=style_dim, n_mlp=n_mlp, lr_mlp=lr_mlp, channels=channels)
        want = g.state_dict()
        missing = [k for k in want if k not in state]
        unexpected = [k for k in state if k not in want]
        if missing or unexpected:
            raise ValueError(f"state dict does not fit a StyleGAN2 generator of size {size}: "
                             f"missing {missing[:5]}, unexpected {unexpected[:5]}")
        for name, value in state.items():  # load_state_dict would raise a bare RuntimeError
            if not isinstance(value, Tensor):
                raise ValueError(f"parameter {name} is a {type(value).__name__}, not a tensor")
            if value.shape != want[name].shape:
                raise ValueError(f"parameter {name} has shape {tuple(value.shape)}, but a StyleGAN2 generator of "
                                 f"size {size} with these channel counts needs {tuple(want[name].shape)}")
        g.load_state_dict(state)
        return g
