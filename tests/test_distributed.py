"""Multi-process fitting: 2 CPU processes (gloo, loopback) launched by torchrun
give the single-process curve; the module under DistributedDataParallel stays
identical across ranks."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import sfvq_ext

WORKER = Path(__file__).with_name("fit_worker.py")


def test_two_process_fit_equals_single_process(tmp_path):
    data = tmp_path / "data.npy"
    np.save(data, torch.randn(400, 5, generator=torch.Generator().manual_seed(1)).numpy())
    single = sfvq_ext.fit(data, 4, seed=3, epochs=2, batch_size=32, progress=False)
    out = tmp_path / "two.safetensors"
    checkpoint = tmp_path / "two-run.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(WORKER), str(data), str(out), "--checkpoint", str(checkpoint), "--ddp-check"],
        env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    two = sfvq_ext.load(out)
    # each rank computed half of every batch's gradient; the sums differ only by rounding
    torch.testing.assert_close(two.codebook, single.codebook, rtol=1e-4, atol=1e-5)
    assert two.codebook_size == 16
    for a, b in zip(two.history, single.history):
        assert a["perplexity"] == b["perplexity"] or abs(a["perplexity"] - b["perplexity"]) < 1e-3 * b["perplexity"]
        np.testing.assert_allclose(a["epoch_loss"], b["epoch_loss"], rtol=1e-4)
