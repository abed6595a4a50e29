"""The factor probe: a small CNN that reads the shape world's factors back from an
image (shape class and the seven continuous factors), so edits of generated images
can be measured in factor units.

    python -m sfvq_ext.demo.probe                 # train on rendered images, report held-out scores
    python -m sfvq_ext.demo.probe --install       # ... and replace the shipped weights
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import world

WEIGHTS = Path(__file__).with_name("probe.safetensors")


class FactorProbe(nn.Module):
    """images (n, 3, 32, 32) in [-1, 1] -> shape logits (n, 3), continuous factors (n, 7) in range units [0, 1]."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.ReLU(),  # 16
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.ReLU(),  # 8
            nn.Conv2d(4 * w, 4 * w, 3, stride=2, padding=1), nn.ReLU(),  # 4
            nn.Flatten(), nn.Linear(4 * w * 16, 256), nn.ReLU())
        self.shape_head = nn.Linear(256, len(world.SHAPES))
        self.factor_head = nn.Linear(256, len(world.CONTINUOUS))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        h = self.features(images)
        return self.shape_head(h), self.factor_head(h)

    @torch.no_grad()
    def read(self, images: Tensor, batch_size: int = 512) -> tuple[Tensor, Tensor]:
        """(shape probabilities (n, 3), continuous factors (n, 7) in range units)."""
        self.eval()
        probs, factors = [], []
        for batch in images.split(batch_size):
            logits, values = self(batch.float())
            probs.append(logits.softmax(dim=1))
            factors.append(values)
        return torch.cat(probs), torch.cat(factors)


def scores(probe: FactorProbe, images: Tensor, factors: dict[str, Tensor]) -> dict:
    """Held-out accuracy of shape and R^2 of each continuous factor."""
    probs, values = probe.read(images)
    truth = world.factor_matrix(factors)
    r2 = 1 - ((values - truth) ** 2).sum(0) / ((truth - truth.mean(0)) ** 2).sum(0)
    accuracy = (probs.argmax(1) == factors["shape"]).float().mean().item()
    return {"shape_accuracy": accuracy, **{f"r2_{k}": float(v) for k, v in zip(world.CONTINUOUS, r2)}}


def load_probe(path: str | Path = WEIGHTS) -> FactorProbe:
    from safetensors.torch import load_file

    probe = FactorProbe()
    probe.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return probe.eval()


def train(train_size: int, test_size: int, epochs: int, batch: int, lr: float, seed: int,
          threads: int | None) -> tuple[FactorProbe, dict]:
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    train_factors = world.sample_factors(train_size, seed=seed + 100)
    test_factors = world.sample_factors(test_size, seed=seed + 101)  # held out: other seeds, other images
    x_train, x_test = world.render(train_factors), world.render(test_factors)
    y_shape, y_values = train_factors["shape"], world.factor_matrix(train_factors)
    probe = FactorProbe()
    opt = torch.optim.Adam(probe.parameters(), lr=lr)
    steps = epochs * (train_size // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    bar = tqdm(total=steps, desc="probe", unit="step", mininterval=5)
    for _ in range(epochs):
        order = torch.randperm(train_size, generator=g)
        for i in range(train_size // batch):
            idx = order[i * batch : (i + 1) * batch]
            probe.train()
            logits, values = probe(x_train[idx])
            loss = F.cross_entropy(logits, y_shape[idx]) + 10 * F.mse_loss(values, y_values[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
    bar.close()
    return probe, scores(probe, x_test, test_factors)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-size", type=int, default=20000)
    p.add_argument("--test-size", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="probe.safetensors")
    p.add_argument("--install", action="store_true", help=f"also write {WEIGHTS}")
    args = p.parse_args(argv)
    started = time.perf_counter()
    probe, result = train(args.train_size, args.test_size, args.epochs, args.batch, args.lr, args.seed, args.threads)
    print(json.dumps(result, indent=2))
    from safetensors.torch import save

    from ..checkpoint import atomic_write_bytes

    info = {**vars(args), **result, "seconds": round(time.perf_counter() - started)}
    info.pop("install"), info.pop("out")
    data = save({k: v.half().contiguous() for k, v in probe.state_dict().items()},
                metadata={"sfvq_ext.probe": json.dumps(info)})
    for path in [Path(args.out)] + ([WEIGHTS] if args.install else []):
        atomic_write_bytes(path, data)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
