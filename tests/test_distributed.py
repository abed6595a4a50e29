"""Multi-process fitting and the module on 2 CPU processes (gloo, loopback) launched
by torchrun: fit gives the single-process curve; the module under
DistributedDataParallel stays identical across ranks and counts globally with
sync_codebook; a plain module issues no collective."""

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
    assert two.current_codebook_size == 16
    # fit's counts are global under torch.distributed: every row of every step of the last stage, once
    assert int(two.segment_usage.sum()) == int(single.segment_usage.sum()) == 2 * 400
    for a, b in zip(two.history, single.history):
        assert a["perplexity"] == b["perplexity"] or abs(a["perplexity"] - b["perplexity"]) < 1e-3 * b["perplexity"]
        np.testing.assert_allclose(a["epoch_loss"], b["epoch_loss"], rtol=1e-4)


DDP_WORKER = Path(__file__).with_name("ddp_worker.py")


def test_module_on_two_processes(tmp_path):
    """tests/ddp_worker.py: DDP usage counts global on both ranks (480 = 5 x (32 + 64)),
    no collective from a plain module used on one rank, synced counts = the whole batch's."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(DDP_WORKER), str(tmp_path / "store")],
        env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    assert "rank 0: ok" in run.stdout and "rank 1: ok" in run.stdout
