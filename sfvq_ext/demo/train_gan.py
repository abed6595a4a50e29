"""Train the small StyleGAN2 the package ships, on the procedural shape world.

    python -m sfvq_ext.demo.train_gan --out gan-run            # the shipped settings (about an hour on 2 CPU cores)
    python -m sfvq_ext.demo.train_gan --out gan-run --install  # ... and replace the shipped weights

Adversarial training as in StyleGAN2, kept small: this package's generator
(32x32, W of 64 dimensions, 8 W+ layers), a residual discriminator with equalised
learning rate and a minibatch-deviation feature, the non-saturating logistic loss,
lazy R1 regularisation on real images, Adam (0, 0.99), an exponential moving average
of the generator's weights (the one shipped), and style-mixing regularisation: with
probability 0.9 a batch is generated from two latents, the second taking over from a
random crossover layer on (StyleGAN2's ``style_mixing_prob``, Karras et al. 2020, and
StyleGAN's section 3.1). Mixing is what makes the W+ layers split the work (coarse
layers pose and shape, fine ones texture and colour), so that layer ranges mean
something. Every setting is a flag; the defaults are the shipped settings, recorded
inside the weights file.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..adapters.stylegan2_arch import Generator
from ..interpret import image_grid, save_png
from . import WEIGHTS, world
GENERATOR_SHAPE = {"size": 32, "style_dim": 64, "n_mlp": 4, "channels": {4: 64, 8: 64, 16: 48, 32: 24}}


class EqualConv2d(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale, self.padding = 1 / math.sqrt(in_ch * kernel * kernel), kernel // 2

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class DiscriminatorBlock(nn.Module):
    """Two 3x3 convolutions and a 2x average-pool, with a scaled residual path."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv1, self.conv2 = EqualConv2d(in_ch, in_ch, 3), EqualConv2d(in_ch, out_ch, 3)
        self.skip = EqualConv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        y = F.leaky_relu(self.conv1(x), 0.2) * math.sqrt(2)
        y = F.avg_pool2d(F.leaky_relu(self.conv2(y), 0.2) * math.sqrt(2), 2)
        return (y + F.avg_pool2d(self.skip(x), 2)) / math.sqrt(2)


class Discriminator(nn.Module):
    def __init__(self, channels=(32, 64, 64)):
        super().__init__()
        self.from_rgb = EqualConv2d(3, channels[0], 1)
        self.blocks = nn.Sequential(*[DiscriminatorBlock(a, b) for a, b in zip(channels, channels[1:] + (channels[-1],))])
        last = channels[-1]
        self.conv = EqualConv2d(last + 1, last, 3)
        self.fc = nn.Linear(last * 16, last)
        self.out = nn.Linear(last, 1)

    def forward(self, images: Tensor) -> Tensor:
        x = self.blocks(F.leaky_relu(self.from_rgb(images), 0.2) * math.sqrt(2))  # (n, C, 4, 4)
        group = min(4, len(x))
        while len(x) % group:
            group -= 1
        # minibatch standard deviation: lets D see a lack of variety
        std = x.reshape(group, -1, *x.shape[1:]).std(dim=0, unbiased=False).mean(dim=(1, 2, 3))
        x = torch.cat([x, std.repeat(group)[:, None, None, None].expand(-1, 1, 4, 4)], dim=1)
        x = F.leaky_relu(self.conv(x), 0.2) * math.sqrt(2)
        return self.out(F.leaky_relu(self.fc(x.flatten(1)), 0.2))[:, 0]


def make_generator() -> Generator:
    return Generator(GENERATOR_SHAPE["size"], style_dim=GENERATOR_SHAPE["style_dim"], n_mlp=GENERATOR_SHAPE["n_mlp"],
                     channels=GENERATOR_SHAPE["channels"])


def save_generator(G: Generator, path: Path, info: dict) -> None:
    """The generator's weights (float16: the file ships with the package) and w_avg, with settings as metadata."""
    from ..checkpoint import atomic_write_bytes
    from safetensors.torch import save

    tensors = {k: v.detach().half().contiguous() for k, v in G.state_dict().items()}
    tensors["w_avg"] = G.w_avg.detach().float().contiguous()
    shape = dict(GENERATOR_SHAPE, channels={str(k): v for k, v in GENERATOR_SHAPE["channels"].items()})
    atomic_write_bytes(path, save(tensors, metadata={"sfvq_ext.generator": json.dumps({**shape, **info})}))


def generate(G: Generator, batch: int, mixing_prob: float, g: torch.Generator) -> Tensor:
    """A batch of fakes, style-mixed as StyleGAN2 trains: with probability ``mixing_prob``
    the W+ layers from one random crossover on (1 .. num_ws - 1, the same for the batch)
    take the w of a second latent."""
    ws = G.mapping(torch.randn(batch, G.z_dim)).clone()
    if mixing_prob > 0 and torch.rand((), generator=g).item() < mixing_prob:
        cutoff = int(torch.randint(1, G.num_ws, (), generator=g))
        ws[:, cutoff:] = G.mapping(torch.randn(batch, G.z_dim))[:, cutoff:]
    return G.synthesis(ws)


def train(out: Path, steps: int, batch: int, lr: float, r1_gamma: float, r1_every: int, ema_half_life: float,
          dataset_size: int, seed: int, threads: int | None, sample_every: int, mixing_prob: float) -> Generator:
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    print(f"rendering {dataset_size} training images of the shape world ...", flush=True)
    data = ((world.render(world.sample_factors(dataset_size, seed=seed)) + 1) * 127.5).round().to(torch.uint8)
    G, D = make_generator(), Discriminator()
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    g_opt = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.0, 0.99))
    r1_ratio = r1_every / (r1_every + 1)  # lazy regularisation: rescale D's Adam as StyleGAN2 does
    d_opt = torch.optim.Adam(D.parameters(), lr=lr * r1_ratio, betas=(0.0, 0.99 ** r1_ratio))
    ema_beta = 0.5 ** (1 / ema_half_life)
    fixed_z = torch.randn(64, G.z_dim, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(seed + 1)
    started = time.perf_counter()
    for step in tqdm(range(steps), desc="GAN", unit="step", mininterval=5):
        real = data[torch.randint(0, dataset_size, (batch,), generator=g)].float() / 127.5 - 1
        # discriminator: real vs fake
        with torch.no_grad():
            fake = generate(G, batch, mixing_prob, g)
        d_loss = F.softplus(D(fake)).mean() + F.softplus(-D(real)).mean()
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()
        if step % r1_every == 0:  # R1: penalise D's gradient on real images
            real.requires_grad_(True)
            (grad,) = torch.autograd.grad(D(real).sum(), real, create_graph=True)
            r1 = grad.square().sum(dim=(1, 2, 3)).mean() * (r1_gamma / 2) * r1_every
            d_opt.zero_grad(set_to_none=True)
            r1.backward()
            d_opt.step()
        # generator: fool D
        g_loss = F.softplus(-D(generate(G, batch, mixing_prob, g))).mean()
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()
        with torch.no_grad():
            for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                p_ema.lerp_(p, 1 - ema_beta)
        if sample_every and (step + 1) % sample_every == 0 or step + 1 == steps:
            G_ema.set_w_avg()
            with torch.no_grad():
                save_png(image_grid(G_ema(fixed_z), 8, scale=2), out / f"samples_{step + 1:06d}.png")
            # the weights so far, so a stopped run still leaves a usable generator
            info = {"steps": step + 1, "batch": batch, "lr": lr, "r1_gamma": r1_gamma, "r1_every": r1_every,
                    "ema_half_life": ema_half_life, "dataset_size": dataset_size, "seed": seed,
                    "style_mixing_prob": mixing_prob, "world_factors": list(world.FACTORS),
                    "seconds": round(time.perf_counter() - started), "torch": torch.__version__}
            save_generator(G_ema, out / WEIGHTS.name, info)
            tqdm.write(f"step {step + 1}: d_loss {d_loss.item():.3f} g_loss {g_loss.item():.3f} "
                       f"({time.perf_counter() - started:.0f} s)")
    return G_ema


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="directory for sample grids and the weights")
    p.add_argument("--steps", type=int, default=7000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.0025)
    p.add_argument("--r1-gamma", type=float, default=0.05)
    p.add_argument("--r1-every", type=int, default=16)
    p.add_argument("--ema-half-life", type=float, default=500.0, help="steps")
    p.add_argument("--dataset-size", type=int, default=30000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--sample-every", type=int, default=500)
    p.add_argument("--mixing-prob", type=float, default=0.9, help="style-mixing probability (StyleGAN2: 0.9; 0: none)")
    p.add_argument("--install", action="store_true", help=f"copy the result to {WEIGHTS}")
    args = p.parse_args(argv)
    out = Path(args.out)
    train(out, args.steps, args.batch, args.lr, args.r1_gamma, args.r1_every, args.ema_half_life, args.dataset_size,
          args.seed, args.threads, args.sample_every, args.mixing_prob)
    if args.install:
        WEIGHTS.write_bytes((out / WEIGHTS.name).read_bytes())
        print(f"installed {WEIGHTS}")


if __name__ == "__main__":
    main()
