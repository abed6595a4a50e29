"""pytest-benchmark suite for the projection, one group per shape, against the
same named baselines as project_table.py. Run separately from the tests:

    .venv/bin/python -m pytest benchmarks/bench_project.py --benchmark-only -p no:cacheprovider
    .venv/bin/python -m pytest benchmarks/bench_project.py --benchmark-only -k "512-1024"
"""

import pytest
import torch

import sfvq_ext
from project_table import N, contenders

SHAPES = [(d, k) for d in (128, 512) for k in (16, 256, 1024, 4096)]
NAMES = ["sfvq project", "torch.mm", "faiss flat k=1", "cdist+argmin", "authors (PyTorch)"]


@pytest.fixture(scope="module", params=SHAPES, ids=[f"{d}-{k}" for d, k in SHAPES])
def shape_contenders(request):
    d, k = request.param
    gen = torch.Generator().manual_seed(0)
    x, c = torch.randn(N, d, generator=gen), torch.randn(k, d, generator=gen)
    return d, k, contenders(x, c)


@pytest.mark.parametrize("name", NAMES)
def test_projection(benchmark, shape_contenders, name):
    d, k, runs = shape_contenders
    fn, scale = runs[name]
    benchmark.group = f"project D={d} K={k} N={N}"
    benchmark.extra_info["scaled_to_N"] = scale  # authors' rule runs on N / scale rows
    benchmark.pedantic(fn, rounds=3, warmup_rounds=1)
