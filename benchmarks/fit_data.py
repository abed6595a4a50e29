"""The fitting benchmark's data: a seeded mixture of anisotropic Gaussians with
Dirichlet weights plus heavy-tailed outliers, written as ``.npy`` shards.

    python benchmarks/fit_data.py --size ci --out data/mixture-ci        # 32,768 x 64, one shard
    python benchmarks/fit_data.py --size large --out data/mixture-large  # 1,048,576 x 512, 8 shards (2 GiB)

The same seed gives the same rows (NumPy's PCG64 through ``default_rng``). The
mixture is the shape of the report behind issue 18: 50 clusters, each a Gaussian
with its own random orientation and a decaying spectrum (standard deviations
``scale_c / sqrt(i + 1)`` along its axes, ``scale_c`` uniform in [0.5, 1.5]),
means drawn from N(0, I), cluster weights from Dirichlet(1, ..., 1); plus 2% outliers
from a multivariate Student t (3 degrees of freedom, finite variance) around the
data's centre.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SIZES = {"ci": {"rows": 32_768, "dim": 64, "shards": 1}, "large": {"rows": 1_048_576, "dim": 512, "shards": 8}}
CLUSTERS, OUTLIER_FRACTION, OUTLIER_DOF = 50, 0.02, 3


class Mixture:
    """The mixture's parameters for ``dim`` and ``seed``; :meth:`rows` draws from it."""

    def __init__(self, dim: int, seed: int = 0, clusters: int = CLUSTERS):
        rng = np.random.default_rng([seed, 0])
        self.dim, self.seed = dim, seed
        self.weights = rng.dirichlet(np.ones(clusters))
        self.means = rng.standard_normal((clusters, dim))
        spectrum = 1.0 / np.sqrt(np.arange(1, dim + 1))
        self.axes = []  # per cluster: rows of a random orthogonal matrix, scaled by its spectrum
        for _ in range(clusters):
            q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
            q *= np.sign(np.diag(r))  # a uniformly random rotation (Haar), not QR's sign convention
            self.axes.append((rng.uniform(0.5, 1.5) * spectrum)[:, None] * q.T)

    def rows(self, n: int, part: int) -> np.ndarray:
        """``n`` float32 rows ``(n, dim)``; ``part`` numbers independent draws (one per shard)."""
        rng = np.random.default_rng([self.seed, 1, part])
        out = np.empty((n, self.dim), dtype=np.float32)
        outlier = rng.random(n) < OUTLIER_FRACTION
        cluster = rng.choice(len(self.weights), size=n, p=self.weights)
        for c in range(len(self.weights)):
            pick = np.flatnonzero(~outlier & (cluster == c))
            out[pick] = self.means[c] + rng.standard_normal((len(pick), self.dim)) @ self.axes[c]
        pick = np.flatnonzero(outlier)
        t = rng.standard_normal((len(pick), self.dim)) / np.sqrt(rng.chisquare(OUTLIER_DOF, (len(pick), 1)) / OUTLIER_DOF)
        out[pick] = self.means.mean(axis=0) + t
        return out


def write_shards(out: str | Path, rows: int, dim: int, shards: int, seed: int = 0) -> list[Path]:
    """Write ``rows`` rows of the mixture as ``shards`` files ``out/part-XX.npy``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mixture = Mixture(dim, seed)
    bounds = np.linspace(0, rows, shards + 1).astype(int)
    paths = []
    for part in range(shards):
        path = out / f"part-{part:02d}.npy"
        np.save(path, mixture.rows(int(bounds[part + 1] - bounds[part]), part))
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), required=True)
    parser.add_argument("--out", required=True, help="directory for the .npy shards")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    size = SIZES[args.size]
    paths = write_shards(args.out, size["rows"], size["dim"], size["shards"], args.seed)
    print(f"wrote {size['rows']} x {size['dim']} rows in {len(paths)} shard(s) to {args.out}")


if __name__ == "__main__":
    main()
