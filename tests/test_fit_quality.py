"""The fitting benchmark's data and measures (benchmarks/fit_data.py, fit_quality.py)."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sfvq_ext import reference

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import fit_data  # noqa: E402
import fit_quality  # noqa: E402


def test_mixture_shards_are_seeded_and_shaped(tmp_path):
    a = fit_data.write_shards(tmp_path / "a", rows=1000, dim=6, shards=3, seed=4)
    b = fit_data.write_shards(tmp_path / "b", rows=1000, dim=6, shards=3, seed=4)
    arrays = [np.load(p) for p in a]
    assert [len(x) for x in arrays] == [333, 333, 334] and all(x.dtype == np.float32 for x in arrays)
    assert all(np.array_equal(np.load(p), np.load(q)) for p, q in zip(a, b))
    other = np.load(fit_data.write_shards(tmp_path / "c", rows=1000, dim=6, shards=3, seed=5)[0])
    assert not np.array_equal(arrays[0], other)
    # a cluster's rows lie within ~2.5 of its mean (spread at most 1.5 / sqrt(i + 1) per axis); most of
    # the 2% Student-t outliers lie further from every mean (1.4% of 20,000 rows beyond 3 when measured)
    mixture = fit_data.Mixture(6, seed=4)
    x = np.concatenate(arrays)
    nearest = np.sqrt(((x[:, None] - mixture.means[None]) ** 2).sum(-1)).min(1)
    assert np.isfinite(x).all() and 0.004 < (nearest > 3).mean() < 0.04


def test_ordering_ratio_on_a_line():
    # K equally spaced points on a line: neighbours 1 apart, all pairs (K + 1) / 3 apart on average
    K = 9
    line = torch.arange(K, dtype=torch.float64)[:, None] * torch.tensor([[3.0, 4.0]]) / 5
    assert fit_quality.ordering_ratio(line) == pytest.approx(3 / (K + 1))
    shuffled = line[torch.tensor([0, 8, 1, 7, 2, 6, 3, 5, 4])]
    assert fit_quality.ordering_ratio(shuffled) > 1


def test_measures_against_brute_force():
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(700, 5, generator=g), torch.randn(8, 5, generator=g)
    m = fit_quality.measures(x, c)
    oracle = reference.project(x, c)
    assert m["curve"] == pytest.approx(float(oracle.dist.sum()) / x.numel(), rel=1e-6)
    assert m["vertex"] == pytest.approx(float(torch.cdist(x.double(), c.double()).min(1).values.square().sum()) / x.numel(), rel=1e-6)
    counts = torch.bincount(oracle.segment, minlength=7).double()
    p = counts[counts > 0] / counts.sum()
    assert m["used"] == int((counts > 0).sum())
    assert m["perplexity"] == pytest.approx(math.exp(float(-(p * p.log()).sum())))
    assert m["clusters"] is None
    means = torch.stack([c[0], c[5]])  # every vector is nearest to one of these two
    assert fit_quality.measures(x, c, means)["clusters"] == 2
