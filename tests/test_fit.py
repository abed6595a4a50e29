"""sfvq_ext.fit: the recipe, reproducibility, sources, the ordering SFVQ exists
for, checkpoints (atomic, kill-and-resume), and bad input."""

import contextlib
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
from sfvq_ext.curve_surgery import revive_unused, shorten_bridges
from sfvq_ext.fit import squared_error_and_grad
from sfvq_ext.recipe import PRESETS, learning_rate_at

WORKER = Path(__file__).with_name("fit_worker.py")
SMALL = dict(epochs=2, batch_size=32, progress=False)


def gaussian(n=512, d=5, seed=1):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_recipe_stages_history_and_schedule():
    x = gaussian()
    m = sfvq_ext.fit(x, 4, **SMALL)
    assert not m.training and m.current_codebook_size == 16 and m.codebook.shape == (16, 5)
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


def test_seed_reproduces_bit_for_bit_at_large_batches():
    # thousands of rows per step, summed by several threads (the default batch of 1024 here)
    x = torch.randn(1 << 16, 16, generator=torch.Generator().manual_seed(2))
    a, b = (sfvq_ext.fit(x, 3, epochs=1, seed=5, progress=False) for _ in range(2))
    assert a.history[0]["steps"] <= 64 and torch.equal(a.codebook, b.codebook)


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
    assert torch.equal(a.codebook, b.codebook) and a.current_codebook_size == 8
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
    shuffled = m.codebook.detach()[torch.randperm(m.current_codebook_size, generator=torch.Generator().manual_seed(0))]
    assert neighbours < bound * neighbour_vs_random_pair_distance(shuffled)[0]


def test_save_load_round_trip(tmp_path):
    m = sfvq_ext.fit(gaussian(), 3, **SMALL)
    path = tmp_path / "curve.safetensors"
    sfvq_ext.save(m, path)
    back = sfvq_ext.load(path)
    assert torch.equal(back.codebook, m.codebook) and back.current_codebook_size == 8 and not back.training
    assert back.history == m.history and torch.equal(back.segment_usage, m.segment_usage)
    x = gaussian(50, seed=9)
    assert torch.equal(back(x)[0], m(x)[0])
    assert [p.name for p in tmp_path.iterdir()] == ["curve.safetensors"]  # no temp files left


@contextlib.contextmanager
def one_thread():
    """fit_worker.py fits on one thread; the runs compared bit for bit with it do too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_worker(data, out, *extra, check=True):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    return subprocess.run([sys.executable, str(WORKER), str(data), str(out), *map(str, extra)],
                          env=env, capture_output=True, text=True, check=check, timeout=300)


def test_kill_and_resume_equals_uninterrupted_run(tmp_path):
    data = tmp_path / "data.npy"
    np.save(data, gaussian(n=400).numpy())
    with one_thread():
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


def three_clusters(n=600, d=4, seed=2):
    """Tight clusters 20 apart: a curve through them has bridges no row uses."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0] * d, [20.0] * d, [-20.0] + [20.0] * (d - 1)])
    return centres[torch.arange(n) % 3] + 0.3 * torch.randn(n, d, generator=g)


def test_kill_and_resume_with_revivals_and_plateaus_equals_uninterrupted_run(tmp_path):
    data = tmp_path / "data.npy"
    np.save(data, three_clusters().numpy())
    settings = dict(seed=3, window=64, **SMALL)  # the worker's settings; windows of 2 steps
    with one_thread():
        whole = sfvq_ext.fit(data, 4, **settings)
    assert whole.history[1]["revived"] > 0 and whole.history[1]["stop"] == "converged"  # both happen in stage 3
    checkpoint = tmp_path / "run.safetensors"
    killed = run_worker(data, tmp_path / "never.safetensors", "--checkpoint", checkpoint, "--window", 64,
                        "--kill-at", 3, 11, check=False)
    assert killed.returncode == -9, killed.stderr
    _, info = ckpt.read_checkpoint(checkpoint)
    assert (info["training"]["stage_bits"], info["training"]["step"]) == (3, 10)  # the last window's end
    run_worker(data, tmp_path / "resumed.safetensors", "--checkpoint", checkpoint, "--window", 64, "--resume")
    resumed = sfvq_ext.load(tmp_path / "resumed.safetensors")
    assert torch.equal(resumed.codebook, whole.codebook)
    assert [h["window_loss"] for h in resumed.history] == [h["window_loss"] for h in whole.history]
    assert [h["revived"] for h in resumed.history] == [h["revived"] for h in whole.history]


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
    assert sfvq_ext.load(legacy).current_codebook_size == 8  # the 3-bit stage's curve, as saved
    path = tmp_path / "run.safetensors"
    shutil.copy(legacy, path)
    # its recipe was the authors' (the only one then): resuming it under another preset is refused
    with pytest.raises(ValueError, match="preset: checkpoint 'authors' vs now 'default'"):
        sfvq_ext.fit(x, 3, resume=path, **settings)
    resumed = sfvq_ext.fit(x, 3, resume=path, preset="authors", **settings)
    whole = sfvq_ext.fit(x, 3, preset="authors", **settings)
    # The saved state was computed elsewhere (old code, maybe another CPU): it may differ from
    # this machine's by rounding, about an ulp of the largest codebook entry per step taken
    # (Adam's own rounding, and its <= lr-sized step times the gradient's relative rounding);
    # the rest of the fit does not amplify it (measured: k ulps saved give <= k ulps at the end).
    # Bound: 4 x that over the 18 steps (14 in the 2-bit stage, 4 in the 3-bit one).
    steps = whole.history[0]["steps"] + info["training"]["step"]
    bound = 4 * steps * torch.finfo(torch.float32).eps * whole.codebook.abs().max().item()
    torch.testing.assert_close(resumed.codebook, whole.codebook, rtol=0, atol=bound)
    # a count changes only if a row is within that rounding of a tie between two segments
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
    with pytest.raises(ValueError, match=r"NaN or Inf.*\(row 150 of the source\)"):
        sfvq_ext.fit(bad, 3, checkpoint=path, init_samples=8, eval_samples=8, **SMALL)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.safetensors"]
    # in a shard directory the file and its own row are named
    shards = tmp_path / "shards"
    shards.mkdir()
    for i, part in enumerate(bad.split([100, 100])):
        np.save(shards / f"part{i}.npy", part.numpy())
    with pytest.raises(ValueError, match=r"part1.npy row 50\)"):
        sfvq_ext.fit(shards, 3, **SMALL)


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


# -- the default recipe's parts ------------------------------------------------


def test_revive_unused_on_a_hand_worked_curve():
    c = torch.arange(8.0).repeat(2, 1).T * torch.tensor([1.0, -2.0])  # vertex j at (j, -2j)
    counts = torch.tensor([5.0, 0, 0, 3, 0, 0, 2])
    # used segments 0, 3, 6 need vertices 0,1 / 3,4 / 6,7: vertices 2 and 5 are unused. The
    # remaining segments 0-1, 1-3, 3-4, 4-6, 6-7 carry 5, 0, 3, 0, 2 rows: shares of the 2 moved
    # vertices 1.0, 0, 0.6, 0, 0.4 -> one each to 0-1 and (largest remainder) 3-4, at their midpoints.
    new, new_counts, moved = revive_unused(c, counts)
    assert moved == 2
    want = torch.tensor([0, 0.5, 1, 3, 3.5, 4, 6, 7]).repeat(2, 1).T * torch.tensor([1.0, -2.0])
    assert torch.equal(new, want)
    assert new_counts.tolist() == [2.5, 2.5, 0, 1.5, 1.5, 0, 2]  # split segments share their rows
    ones, zeros = torch.ones(7), torch.zeros(7)
    assert revive_unused(c, ones) == (c, ones, 0)  # nothing unused: unchanged
    assert revive_unused(c, zeros) == (c, zeros, 0)  # no rows at all: nothing to go by
    with pytest.raises(ValueError, match="counts"):
        revive_unused(c, torch.ones(6))


@pytest.mark.parametrize("seed", range(20))
def test_revive_unused_keeps_the_used_curve_and_its_order(seed):
    g = torch.Generator().manual_seed(seed)
    K = int(torch.randint(4, 40, (1,), generator=g))
    c = torch.randn(K, 3, generator=g).double()
    counts = torch.randint(0, 5, (K - 1,), generator=g).double() * (torch.rand(K - 1, generator=g) < 0.6)
    new, new_counts, moved = revive_unused(c, counts)
    assert float(new_counts.sum()) == pytest.approx(float(counts.sum())) and len(new_counts) == K - 1
    used = counts > 0
    needed = torch.zeros(K, dtype=torch.bool)
    needed[:-1] |= used
    needed[1:] |= used
    assert new.shape == c.shape and moved == (int((~needed).sum()) if used.any() else 0)
    # the needed vertices appear in the new curve, exactly and in their order
    positions = [int((new == c[j]).all(dim=1).nonzero()[0]) for j in needed.nonzero().squeeze(1)] if moved else []
    assert positions == sorted(positions)
    # each used segment is still a segment of the new curve, or is split by new vertices lying on it
    for a, b in zip(positions, positions[1:]):
        for p in new[a + 1 : b]:
            cross = torch.linalg.matrix_rank(torch.stack([p - new[a], new[b] - new[a]]), atol=1e-9)
            between = torch.dot(p - new[a], new[b] - new[a]) / (new[b] - new[a]).square().sum()
            assert cross <= 1 and 0 < between < 1


def test_plateau_rule_stops_after_its_decays():
    # tol 0.99: no window beats the best by 99%, so every window after the first is a plateau;
    # the stage halves the rate `decays` times and stops at the next plateau: decays + 2 windows
    x = gaussian()
    for decays in (0, 2):
        m = sfvq_ext.fit(x, 3, batch_size=32, window=64, tol=0.99, decays=decays, revive=False, progress=False)
        for h in m.history:
            assert h["stop"] == "converged" and h["steps"] == (decays + 2) * 2 and len(h["window_loss"]) == decays + 2
    # a stage that stops inside an epoch leaves nothing of it to the next stage's first epoch
    x = gaussian(n=320)  # 10 steps per epoch at batch 32; windows of 2 steps; the cap is 2 epochs
    m = sfvq_ext.fit(x, 3, batch_size=32, window=64, tol=0.99, decays=0, epochs=2, revive=False, progress=False)
    assert [h["steps"] for h in m.history] == [4, 4] and [h["epoch_loss"] for h in m.history] == [[], []]
    m = sfvq_ext.fit(x, 3, batch_size=32, window=64, tol=0.99, decays=6, epochs=1, revive=False, progress=False)
    want = [torch.tensor(h["window_loss"]).mean().item() for h in m.history]  # equal windows: their mean
    assert [h["steps"] for h in m.history] == [10, 10]
    assert [h["epoch_loss"][0] for h in m.history] == pytest.approx(want, rel=1e-6)


def test_default_recipe_is_scale_free():
    # the learning rate is in units of the data's spread: data times 2**10 (an exact scaling)
    # gives the curve times 2**10, up to Adam's eps; in absolute units it does not
    x = three_clusters(n=300) / 20
    small = sfvq_ext.fit(x, 3, seed=1, progress=False).codebook.detach()
    large = sfvq_ext.fit(x * 1024, 3, seed=1, progress=False).codebook.detach()
    torch.testing.assert_close(large, small * 1024, rtol=1e-4, atol=1e-4 * 1024)
    absolute = dict(lr=0.001, lr_unit="absolute", seed=1, progress=False)
    a = sfvq_ext.fit(x, 3, **absolute).codebook.detach()
    b = sfvq_ext.fit(x * 1024, 3, **absolute).codebook.detach()
    assert not torch.allclose(b, a * 1024, rtol=1e-2)


def test_batch_size_follows_the_data_size_unless_given():
    # an epoch's rows / 64, clamped to [64, 1024]: 4000 rows -> 64 per batch, 63 steps per epoch
    for rows, steps in ((4000, 63), (64 * 300, 64)):
        m = sfvq_ext.fit(torch.randn(rows, 3), 2, epochs=1, schedule="milestones", progress=False)
        assert m.history[0]["steps"] == steps
    assert sfvq_ext.fit(torch.randn(4000, 3), 2, epochs=1, schedule="milestones", batch_size=1000,
                        progress=False).history[0]["steps"] == 4


def test_presets_and_bad_recipe_settings():
    assert PRESETS["authors"].batch_size == 64 and PRESETS["authors"].lr == 1e-3 and PRESETS["authors"].epochs == 5
    m = sfvq_ext.fit(gaussian(), 3, preset="authors", epochs=1, progress=False)
    assert m.fit_settings["preset"] == "authors" and m.fit_settings["recipe"]["schedule"] == "milestones"
    assert all(h["steps"] == math.ceil(512 / 64) for h in m.history)
    assert (m.fit_settings["batch_size_used"], m.fit_settings["lr_used"]) == (64, 1e-3)
    # the default's rules, resolved for this data: batch 512 // 64 = 64, lr 0.01 x spread x sqrt(64 / 1024)
    x = gaussian() * 3
    m = sfvq_ext.fit(x, 2, epochs=1, progress=False)
    spread = m.fit_settings["data_scale"]
    assert m.fit_settings["batch_size_used"] == 64 and m.fit_settings["recipe"]["batch_size"] is None
    assert spread == pytest.approx(float(x.double().var(dim=0, correction=0).mean().sqrt()), rel=1e-6)  # all 512 rows
    assert m.fit_settings["lr_used"] == pytest.approx(0.01 * spread * 0.25)
    with pytest.raises(ValueError, match="preset must be one of"):
        sfvq_ext.fit(gaussian(), 3, preset="fast")
    with pytest.raises(TypeError, match="unknown keyword"):
        sfvq_ext.fit(gaussian(), 3, learning_rate=0.1)
    for bad, match in ((dict(tol=1.5), "tol"), (dict(schedule="cosine"), "schedule"), (dict(window=0), "window"),
                       (dict(lr=-1.0), "lr"), (dict(lr_unit="pixels"), "lr_unit"), (dict(gamma=2.0), "gamma"),
                       (dict(revive="no"), "revive")):
        with pytest.raises(ValueError, match=match):
            sfvq_ext.fit(gaussian(), 3, progress=False, **bad)


def test_shorten_bridges_removes_an_out_and_back_excursion():
    # pieces 0-1, 10-11 and 2-3 on a line, joined by unused bridges 1->10 and 11->2 (18 long):
    # the shortest tour visiting each piece in its own order is 0 1 2 3 10 11 (bridges 1 + 7)
    at = torch.tensor([0.0, 1, 10, 11, 2, 3])
    c = torch.stack([at, torch.zeros(6)], 1)
    counts = torch.tensor([4.0, 0, 5, 0, 6])
    new, new_counts, reversals = shorten_bridges(c, counts)
    if new[0, 0] != 0:  # the same tour run backwards is as short
        new, new_counts = new.flip(0), new_counts.flip(0)
    assert new[:, 0].tolist() == [0, 1, 2, 3, 10, 11] and reversals > 0
    assert new_counts.tolist() == [4, 0, 6, 0, 5]  # each used segment keeps its rows
    assert shorten_bridges(new, new_counts)[2] == 0  # nothing left to shorten
    assert shorten_bridges(c, torch.ones(5))[2] == 0  # no bridges: unchanged


@pytest.mark.parametrize("seed", range(10))
def test_shorten_bridges_keeps_every_used_segment_and_never_lengthens(seed):
    g = torch.Generator().manual_seed(seed)
    K = int(torch.randint(6, 60, (1,), generator=g))
    c = torch.randn(K, 3, generator=g).double()
    counts = torch.randint(1, 5, (K - 1,), generator=g).double()
    counts[torch.rand(K - 1, generator=g) < 0.3] = 0
    counts[1:][counts[:-1] == 0] = counts[1:][counts[:-1] == 0].clamp(min=1)  # single-segment bridges

    def segments(c, counts, used):
        return sorted((tuple(sorted((tuple(c[i].tolist()), tuple(c[i + 1].tolist())))), float(counts[i]))
                      for i in range(len(counts)) if (counts[i] > 0) == used)

    def bridge_length(c, counts):
        return sum(float((c[i + 1] - c[i]).norm()) for i in range(len(counts)) if counts[i] == 0)

    new, new_counts, _ = shorten_bridges(c, counts)
    assert segments(new, new_counts, True) == segments(c, counts, True)
    assert sorted(map(tuple, new.tolist())) == sorted(map(tuple, c.tolist()))  # a reordering
    assert bridge_length(new, new_counts) <= bridge_length(c, counts) + 1e-9
