"""sfvq_ext.fit: the recipe, reproducibility, sources, the ordering SFVQ exists
for, checkpoints (atomic, kill-and-resume), and bad input."""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import sfvq_ext
from sfvq_ext import checkpoint as ckpt
from sfvq_ext import reference
from sfvq_ext.fit import learning_rate_at, squared_error_and_grad

WORKER = Path(__file__).with_name("fit_worker.py")
SMALL = dict(epochs=2, batch_size=32, progress=False)


def gaussian(n=512, d=5, seed=1):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_recipe_stages_history_and_schedule():
    x = gaussian()
    m = sfvq_ext.fit(x, 4, **SMALL)
    assert not m.training and m.codebook_size == 16 and m.codebook.shape == (16, 5)
    assert [h["bits"] for h in m.history] == [2, 3, 4]
    assert [h["codebook_size"] for h in m.history] == [4, 8, 16]
    for h in m.history:
        assert h["steps"] == 2 * math.ceil(512 / 32) and len(h["epoch_loss"]) == 2
        assert 1 <= h["perplexity"] <= h["codebook_size"] - 1
    mse = [h["projection_mse"] for h in m.history]
    assert mse[0] > mse[1] > mse[2]  # more vectors, smaller error
    want = ((x.double() - reference.project(x, m.codebook.detach()).point) ** 2).mean().item()
    assert mse[-1] == pytest.approx(want, rel=1e-5)  # eval sample = all 512 rows here
    # the authors' schedule: lr halved at 60% and at 80% of each stage
    assert [learning_rate_at(s, 100, 1e-3) for s in (0, 59, 60, 79, 80, 99)] == [1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4]


def test_step_gradient_equals_autograd_through_the_dithered_points():
    # fit's hand-taken gradient against autograd on a pure-PyTorch step (float64, brute-force search)
    g = torch.Generator().manual_seed(3)
    x, c, r = torch.randn(300, 6, generator=g).double(), torch.randn(9, 6, generator=g).double(), torch.rand(8, generator=g).double()
    error, grad, segment = squared_error_and_grad(x, c, r, 300 * 6)
    leaf = c.clone().requires_grad_()
    points = reference.dithered_points(leaf, r)
    want_segment = torch.cdist(x, points.detach()).argmin(1)
    want_error = (x - points[want_segment]).square().sum()
    (want_error / (300 * 6)).backward()
    assert torch.equal(segment, want_segment)
    torch.testing.assert_close(error, want_error.detach())
    torch.testing.assert_close(grad, leaf.grad)


def test_seed_reproduces_bit_for_bit():
    x = gaussian()
    a = sfvq_ext.fit(x, 4, seed=11, **SMALL)
    b = sfvq_ext.fit(x, 4, seed=11, **SMALL)
    c = sfvq_ext.fit(x, 4, seed=12, **SMALL)
    assert torch.equal(a.codebook, b.codebook)
    assert not torch.equal(a.codebook, c.codebook)


def test_tensor_npy_file_and_shard_directory_give_the_same_curve(tmp_path):
    x = gaussian(n=300)
    np.save(tmp_path / "all.npy", x.numpy())
    shards = tmp_path / "shards"
    shards.mkdir()
    for i, part in enumerate(x.split([100, 77, 123])):
        np.save(shards / f"part{i}.npy", part.numpy())
    curves = [sfvq_ext.fit(src, 3, **SMALL).codebook for src in (x, x.numpy(), tmp_path / "all.npy", str(shards))]
    for c in curves[1:]:
        assert torch.equal(c, curves[0])


def test_sampler_source_is_reproducible():
    def sampler(n, generator):
        return torch.randn(n, 3, generator=generator) * torch.tensor([3.0, 1.0, 0.1])

    a = sfvq_ext.fit(sampler, 3, samples_per_epoch=256, **SMALL)
    b = sfvq_ext.fit(sampler, 3, samples_per_epoch=256, **SMALL)
    assert torch.equal(a.codebook, b.codebook) and a.codebook_size == 8
    with pytest.raises(ValueError, match="samples_per_epoch"):
        sfvq_ext.fit(sampler, 3, **SMALL)


def neighbour_vs_random_pair_distance(codebook):
    c = codebook.detach().double()
    neighbours = (c[1:] - c[:-1]).norm(dim=1).mean()
    pairs = torch.cdist(c, c)
    off_diagonal = pairs[~torch.eye(len(c), dtype=torch.bool)].mean()
    return neighbours.item(), off_diagonal.item()


def spiral(n=4000):
    g = torch.Generator().manual_seed(5)
    s = torch.rand(n, generator=g) * 3 * math.pi + 1
    return torch.stack([s * torch.cos(s), s * torch.sin(s)], 1) / 10 + 0.02 * torch.randn(n, 2, generator=g)


@pytest.mark.parametrize("name,bound", [("spiral-2d", 0.25), ("gaussian-64d", 0.5)])
def test_neighbouring_vectors_are_closer_than_random_pairs(name, bound):
    """The ordering SFVQ exists for: consecutive codebook vectors are close
    (measured: 0.12 of the random-pair distance on the spiral, 0.32 on N(0, I) in 64-D;
    the same vectors in a random order give about 1)."""
    if name == "spiral-2d":
        x, bits = spiral(), 6
    else:
        x, bits = torch.randn(4000, 64, generator=torch.Generator().manual_seed(6)), 5
    m = sfvq_ext.fit(x, bits, epochs=3, batch_size=64, progress=False)
    neighbours, random_pairs = neighbour_vs_random_pair_distance(m.codebook)
    assert neighbours < bound * random_pairs, (neighbours, random_pairs)
    shuffled = m.codebook.detach()[torch.randperm(m.codebook_size, generator=torch.Generator().manual_seed(0))]
    assert neighbours < bound * neighbour_vs_random_pair_distance(shuffled)[0]


def test_save_load_round_trip(tmp_path):
    m = sfvq_ext.fit(gaussian(), 3, **SMALL)
    path = tmp_path / "curve.safetensors"
    sfvq_ext.save(m, path)
    back = sfvq_ext.load(path)
    assert torch.equal(back.codebook, m.codebook) and back.codebook_size == 8 and not back.training
    assert back.history == m.history and torch.equal(back.segment_usage, m.segment_usage)
    x = gaussian(50, seed=9)
    assert torch.equal(back(x)[0], m(x)[0])
    assert [p.name for p in tmp_path.iterdir()] == ["curve.safetensors"]  # no temp files left


def run_worker(data, out, *extra, check=True):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    return subprocess.run([sys.executable, str(WORKER), str(data), str(out), *map(str, extra)],
                          env=env, capture_output=True, text=True, check=check, timeout=300)


def test_kill_and_resume_equals_uninterrupted_run(tmp_path):
    data = tmp_path / "data.npy"
    np.save(data, gaussian(n=400).numpy())
    whole = sfvq_ext.fit(data, 4, seed=3, **SMALL)  # the worker's settings, uninterrupted
    checkpoint = tmp_path / "run.safetensors"
    # SIGKILL in the middle of the 3-bit stage (13 steps per epoch, checkpoint every 5)
    killed = run_worker(data, tmp_path / "never.safetensors", "--checkpoint", checkpoint,
                        "--checkpoint-every", 5, "--kill-at", 3, 17, check=False)
    assert killed.returncode == -9, killed.stderr
    _, info = ckpt.read_checkpoint(checkpoint)
    assert (info["training"]["stage_bits"], info["training"]["step"]) == (3, 15)
    run_worker(data, tmp_path / "resumed.safetensors", "--checkpoint", checkpoint, "--resume")
    resumed = sfvq_ext.load(tmp_path / "resumed.safetensors")
    assert torch.equal(resumed.codebook, whole.codebook)
    assert [h["epoch_loss"] for h in resumed.history] == [h["epoch_loss"] for h in whole.history]
    # resuming a finished run returns its curve
    again = sfvq_ext.fit(data, 4, seed=3, resume=checkpoint, **SMALL)
    assert torch.equal(again.codebook, whole.codebook)


def test_resume_at_a_stage_boundary(tmp_path):
    x = gaussian(n=64)
    whole = sfvq_ext.fit(x, 4, **SMALL)
    path = tmp_path / "c.safetensors"

    class Stop(Exception):
        pass

    def stop_after_stage_two(info):
        if info["bits"] == 3 and info["step"] == 1:
            raise Stop

    with pytest.raises(Stop):
        sfvq_ext.fit(x, 4, checkpoint=path, callback=stop_after_stage_two, **SMALL)
    _, info = ckpt.read_checkpoint(path)
    assert (info["training"]["stage_bits"], info["training"]["step"]) == (3, 0)  # 2-bit stage done, 3-bit not started
    assert torch.equal(sfvq_ext.fit(x, 4, resume=path, **SMALL).codebook, whole.codebook)


def test_checkpoint_written_before_issue_13_resumes(tmp_path):
    """tests/data/legacy_fit_checkpoint.safetensors: a fit stopped in its 3-bit stage by
    the code of commit 78519b6 (tests/data/make_legacy.py). Today's code loads it and
    resumes it to the curve an uninterrupted fit gives."""
    import shutil

    legacy = Path(__file__).with_name("data") / "legacy_fit_checkpoint.safetensors"
    x = torch.randn(200, 3, generator=torch.Generator().manual_seed(0))
    settings = dict(epochs=2, batch_size=32, seed=1, progress=False, eval_samples=200, init_samples=200)
    _, info = ckpt.read_checkpoint(legacy)
    assert (info["training"]["stage_bits"], info["training"]["step"]) == (3, 4)
    assert sfvq_ext.load(legacy).codebook_size == 8  # the 3-bit stage's curve, as saved
    path = tmp_path / "run.safetensors"
    shutil.copy(legacy, path)
    # its recipe was the authors' (the only one then): resuming it under another preset is refused
    with pytest.raises(ValueError, match="preset: checkpoint 'authors' vs now 'default'"):
        sfvq_ext.fit(x, 3, resume=path, **settings)
    resumed = sfvq_ext.fit(x, 3, resume=path, preset="authors", **settings)
    whole = sfvq_ext.fit(x, 3, preset="authors", **settings)
    assert torch.equal(resumed.codebook, whole.codebook)
    assert torch.equal(resumed.segment_usage, whole.segment_usage)


def test_resume_with_other_settings_is_refused(tmp_path):
    x = gaussian(n=64)
    path = tmp_path / "c.safetensors"
    sfvq_ext.fit(x, 3, checkpoint=path, **SMALL)
    with pytest.raises(ValueError, match=r"other settings \(batch_size: checkpoint 32 vs now 16"):
        sfvq_ext.fit(x, 3, resume=path, epochs=2, batch_size=16, progress=False)
    with pytest.raises(ValueError, match="dim"):
        sfvq_ext.fit(gaussian(n=64, d=7), 3, resume=path, **SMALL)
    curve = tmp_path / "curve.safetensors"
    sfvq_ext.save(sfvq_ext.load(path), curve)
    with pytest.raises(ValueError, match="fitted curve, not a training checkpoint"):
        sfvq_ext.fit(x, 3, resume=curve, **SMALL)


def test_nan_batch_raises_and_keeps_the_checkpoint(tmp_path):
    x = gaussian(n=200)
    path = tmp_path / "c.safetensors"
    sfvq_ext.fit(x, 3, checkpoint=path, **SMALL)
    before = path.read_bytes()
    bad = x.clone()
    bad[150, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        sfvq_ext.fit(bad, 3, checkpoint=path, init_samples=8, eval_samples=8, **SMALL)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.safetensors"]


def test_interrupted_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "curve.safetensors"
    m = sfvq_ext.fit(gaussian(), 3, **SMALL)
    sfvq_ext.save(m, path)
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        sfvq_ext.save(m, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["curve.safetensors"]


def test_bad_checkpoint_files(tmp_path):
    good = tmp_path / "good.safetensors"
    sfvq_ext.save(sfvq_ext.fit(gaussian(), 3, **SMALL), good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint at all")
    foreign = tmp_path / "foreign.safetensors"
    from safetensors.torch import save_file
    save_file({"weight": torch.zeros(3)}, str(foreign))
    for path, message in [(truncated, "unreadable"), (garbage, "unreadable"), (foreign, "not written by sfvq_ext")]:
        with pytest.raises(ValueError, match=message):
            sfvq_ext.load(path)
        with pytest.raises(ValueError, match=message):
            sfvq_ext.fit(gaussian(), 3, resume=path, **SMALL)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sfvq_ext.load(tmp_path / "missing.safetensors")
    assert good.read_bytes() == data


def test_bad_sources_and_arguments(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        sfvq_ext.fit(torch.empty(0, 4), 3, **SMALL)
    with pytest.raises(ValueError, match=r"shape \(N, dim\)"):
        sfvq_ext.fit(torch.randn(10), 3, **SMALL)
    with pytest.raises(TypeError, match="floating-point"):
        sfvq_ext.fit(torch.ones(10, 3, dtype=torch.int64), 3, **SMALL)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sfvq_ext.fit(tmp_path / "nope.npy", 3, **SMALL)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .npy files"):
        sfvq_ext.fit(tmp_path / "empty", 3, **SMALL)
    np.save(tmp_path / "empty_rows.npy", np.zeros((0, 4), np.float32))
    with pytest.raises(ValueError, match="no rows"):
        sfvq_ext.fit(tmp_path / "empty_rows.npy", 3, **SMALL)
    shards = tmp_path / "mixed"
    shards.mkdir()
    np.save(shards / "a.npy", np.zeros((5, 4), np.float32))
    np.save(shards / "b.npy", np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match="differ in width"):
        sfvq_ext.fit(shards, 3, **SMALL)
    with pytest.raises(ValueError, match="bits"):
        sfvq_ext.fit(gaussian(), 1, **SMALL)
    with pytest.raises(ValueError, match="batch_size"):
        sfvq_ext.fit(gaussian(), 3, epochs=1, batch_size=0)
    with pytest.raises(ValueError, match="sampler must return"):
        sfvq_ext.fit(lambda n, g: torch.randn(n + 1, 3), 3, samples_per_epoch=10, **SMALL)
    with pytest.raises(TypeError, match="source must be"):
        sfvq_ext.fit(42, 3, **SMALL)
