"""Stand-in for stylegan2-ada-pytorch training/networks.py (test helper, written
for these tests): a tiny style-based generator with the NVlabs interface --
``G.mapping(z, c, truncation_psi) -> ws (n, num_ws, w_dim)``,
``G.synthesis(ws, noise_mode=, force_fp32=)``, ``G.num_ws``, ``G.mapping.w_avg`` --
and every network class persistent, as in the real repository."""

import math

import torch
from torch_utils import persistence
from torch_utils.ops import bias_act

TORGB_GAIN = 1.0  # the output scale of ToRGB


def normalize_2nd_moment(x, eps=1e-8):
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


@persistence.persistent_class
class FullyConnectedLayer(torch.nn.Module):
    def __init__(self, in_features, out_features, activation="linear", bias_init=0.0):
        super().__init__()
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn(out_features, in_features) / math.sqrt(in_features))
        self.bias = torch.nn.Parameter(torch.full((out_features,), float(bias_init)))

    def forward(self, x):
        return bias_act.bias_act(x @ self.weight.t(), self.bias, act=self.activation)


@persistence.persistent_class
class MappingNetwork(torch.nn.Module):
    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=2):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, c_dim, w_dim, num_ws, num_layers
        if c_dim:
            self.embed = FullyConnectedLayer(c_dim, w_dim)
        features = [z_dim + (w_dim if c_dim else 0)] + [w_dim] * num_layers
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnectedLayer(features[i], features[i + 1], activation="lrelu"))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None):
        x = normalize_2nd_moment(z)
        if self.c_dim:
            x = torch.cat([x, normalize_2nd_moment(self.embed(c))], dim=1)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if truncation_psi != 1:
            x = self.w_avg.lerp(x, truncation_psi)
        return x.unsqueeze(1).repeat(1, self.num_ws, 1)


@persistence.persistent_class
class SynthesisLayer(torch.nn.Module):
    """Style-modulated 3x3 convolution with noise, then bias and leaky ReLU."""

    def __init__(self, in_channels, out_channels, w_dim, resolution):
        super().__init__()
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = torch.nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = torch.nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = torch.nn.Parameter(torch.tensor(0.1))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))

    def forward(self, x, w, noise_mode="random"):
        styles = self.affine(w)  # (n, in)
        weight = self.weight / math.sqrt(self.weight[0].numel())
        x = torch.nn.functional.conv2d(x * styles[:, :, None, None], weight, padding=1)
        if noise_mode == "const":
            x = x + self.noise_const * self.noise_strength
        elif noise_mode == "random":
            x = x + torch.randn_like(x[:, :1]) * self.noise_strength
        return bias_act.bias_act(x, self.bias, act="lrelu")


@persistence.persistent_class
class SynthesisNetwork(torch.nn.Module):
    """A learned 4x4 constant, one layer per resolution (2x upsampling between), ToRGB."""

    def __init__(self, w_dim, img_resolution, img_channels, channels=8):
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.const = torch.nn.Parameter(torch.randn(channels, 4, 4))
        self.resolutions = [2 ** i for i in range(2, int(math.log2(img_resolution)) + 1)]
        self.layers = torch.nn.ModuleList(SynthesisLayer(channels, channels, w_dim, r) for r in self.resolutions)
        self.torgb = FullyConnectedLayer(w_dim, channels, bias_init=1.0)  # modulation of the 1x1 ToRGB
        self.torgb_weight = torch.nn.Parameter(torch.randn(img_channels, channels, 1, 1))
        self.num_ws = len(self.layers) + 1

    def forward(self, ws, noise_mode="random", force_fp32=False):
        assert ws.shape[1:] == (self.num_ws, self.w_dim), ws.shape
        x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
        for i, layer in enumerate(self.layers):
            if i > 0:
                x = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
            x = layer(x, ws[:, i], noise_mode=noise_mode)
        styles = self.torgb(ws[:, -1])
        img = torch.nn.functional.conv2d(x * styles[:, :, None, None], self.torgb_weight) / math.sqrt(x.shape[1])
        return img * TORGB_GAIN


@persistence.persistent_class
class Generator(torch.nn.Module):
    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs={}, synthesis_kwargs={}):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, num_ws=self.num_ws, **mapping_kwargs)

    def forward(self, z, c, truncation_psi=1, noise_mode="random"):
        return self.synthesis(self.mapping(z, c, truncation_psi=truncation_psi), noise_mode=noise_mode)


@persistence.persistent_class
class Discriminator(torch.nn.Module):
    def __init__(self, c_dim, img_resolution, img_channels):
        super().__init__()
        self.c_dim, self.img_resolution, self.img_channels = c_dim, img_resolution, img_channels
        self.out = FullyConnectedLayer(img_channels * img_resolution ** 2, 1)

    def forward(self, img, c):
        return self.out(img.flatten(1))
