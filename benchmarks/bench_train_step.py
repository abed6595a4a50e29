"""pytest-benchmark suite for one training step (forward, backward, Adam) at
D = 512, batch 4096, against the same named baselines as train_step_table.py:

    .venv/bin/python -m pytest benchmarks/bench_train_step.py --benchmark-only -p no:cacheprovider
"""

import pytest
import torch

from train_step_table import AUTHORS_BUDGET, BATCH, CONTENDERS, D, make_step


@pytest.mark.parametrize("K", [64, 1024, 4096])
@pytest.mark.parametrize("name", CONTENDERS)
def test_train_step(benchmark, name, K):
    batch = max(64, min(BATCH, AUTHORS_BUDGET // (D * (K - 1)))) if name == "authors" else BATCH
    pool = torch.randn(max(batch, K), D, generator=torch.Generator().manual_seed(1))
    step = make_step(name, K, pool[:batch], pool)
    benchmark.group = f"train step D={D} K={K}"
    benchmark.extra_info["batch"] = batch  # throughput = batch / time
    benchmark.pedantic(step, rounds=3, warmup_rounds=1)
