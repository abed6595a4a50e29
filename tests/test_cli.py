"""The command line: `sfvq fit` and `sfvq quantize` on .npy files."""

import json

import numpy as np
import pytest
import torch

import sfvq_ext
from sfvq_ext import cli


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "latents.npy"
    np.save(path, np.random.default_rng(0).standard_normal((300, 6)).astype(np.float32))
    return path


def fit_args(data, out, *extra):
    return ["fit", str(data), "--bits", "3", "--out", str(out), "--epochs", "1", "--batch-size", "32", "--quiet", *extra]


def test_fit_writes_curve_summary_and_picture(data_file, tmp_path):
    out = tmp_path / "run"
    assert cli.main(fit_args(data_file, out)) == 0
    curve = sfvq_ext.load(out / "curve.safetensors")
    assert curve.codebook_size == 8 and curve.dim == 6
    summary = json.loads((out / "fit.json").read_text())
    assert [h["bits"] for h in summary["history"]] == [2, 3] and summary["history"] == curve.history
    assert (out / "fit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # same settings and seed as the API: the same curve
    api = sfvq_ext.fit(data_file, 3, epochs=1, batch_size=32, progress=False)
    assert torch.equal(api.codebook, curve.codebook)


def fails(argv, capsys, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_fit_refuses_to_overwrite_a_run_unless_told(data_file, tmp_path, capsys):
    out = tmp_path / "run"
    cli.main(fit_args(data_file, out))
    before = (out / "checkpoint.safetensors").read_bytes()
    fails(fit_args(data_file, out), capsys, "--resume to continue it or --force")
    assert (out / "checkpoint.safetensors").read_bytes() == before
    assert cli.main(fit_args(data_file, out, "--resume")) == 0  # a finished run resumes to its result
    assert cli.main(fit_args(data_file, out, "--force")) == 0
    fails(fit_args(data_file, tmp_path / "other", "--resume"), capsys, "does not exist")


def test_quantize_writes_exact_projection(data_file, tmp_path):
    cli.main(fit_args(data_file, tmp_path / "run"))
    out = tmp_path / "q"
    assert cli.main(["quantize", str(tmp_path / "run" / "curve.safetensors"), str(data_file), "--out", str(out),
                     "--chunk", "70", "--quiet"]) == 0
    curve = sfvq_ext.load(tmp_path / "run" / "curve.safetensors")
    x = torch.from_numpy(np.load(data_file))
    want = sfvq_ext.project(x, curve.codebook.detach())
    np.testing.assert_array_equal(np.load(out / "points.npy"), want.point.numpy())
    np.testing.assert_allclose(np.load(out / "coords.npy"), want.coord.double().numpy(), rtol=1e-6)
    np.testing.assert_array_equal(np.load(out / "segments.npy"), want.segment.numpy())
    np.testing.assert_allclose(np.load(out / "distances.npy"), want.dist.double().numpy(), rtol=1e-6)
    assert sorted(p.name for p in out.iterdir()) == ["coords.npy", "distances.npy", "points.npy", "segments.npy"]


def test_quantize_rejects_bad_input(data_file, tmp_path, capsys):
    cli.main(fit_args(data_file, tmp_path / "run"))
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((10, 5), np.float32))
    curve = str(tmp_path / "run" / "curve.safetensors")
    fails(["quantize", curve, str(wrong), "--out", str(tmp_path / "q")], capsys, "must hold a float array (N, 6)")
    fails(["quantize", str(wrong), str(wrong), "--out", str(tmp_path / "q")], capsys, "unreadable")
    fails(["fit", str(tmp_path / "missing.npy"), "--bits", "3", "--out", str(tmp_path / "r")], capsys, "does not exist")
    assert not (tmp_path / "q").exists() and not (tmp_path / "r").exists()
