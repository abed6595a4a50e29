"""The command line: `sfvq fit` and `sfvq quantize` on .npy files."""

import json
from pathlib import Path

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


def test_quantize_names_the_files_row(data_file, tmp_path, capsys):
    """Bad rows are named by their row in the file, not in the chunk; finite float64 values
    float32 cannot hold are not called NaN; an .npz archive gets a one-line error."""
    cli.main(fit_args(data_file, tmp_path / "run"))
    curve = str(tmp_path / "run" / "curve.safetensors")
    x = np.load(data_file).astype(np.float64)
    x[137, 2] = np.nan
    nan_file = tmp_path / "nan.npy"
    np.save(nan_file, x)
    fails(["quantize", curve, str(nan_file), "--out", str(tmp_path / "q"), "--chunk", "50"], capsys,
          "row 137 holds NaN or Inf")
    x[137, 2] = 0.0
    x[151, 0] = 1e100
    np.save(nan_file, x)
    fails(["quantize", curve, str(nan_file), "--out", str(tmp_path / "q"), "--chunk", "50"], capsys,
          "row 151 has values beyond float32's range")
    archive = tmp_path / "x.npz"
    np.savez(archive, x=x)
    fails(["quantize", curve, str(archive), "--out", str(tmp_path / "q2")], capsys, "not a single .npy array")


def test_generator_commands(tmp_path, capsys, no_network):
    """fit --generator (latents sampled on the fly), then render, edit, augment."""
    from sfvq_ext.adapters import StyleGAN2Generator, save_rosinality

    torch.manual_seed(0)
    g = StyleGAN2Generator(16, style_dim=16, n_mlp=2, channels={4: 8, 8: 8, 16: 8})
    g.set_w_avg()
    save_rosinality(g, tmp_path / "g.pt")
    run = tmp_path / "run"
    spec = f"stylegan2:{tmp_path / 'g.pt'}"
    assert cli.main(["fit", "--generator", spec, "--bits", "3", "--out", str(run), "--epochs", "1",
                     "--batch-size", "64", "--samples-per-epoch", "256", "--truncation", "0.7", "--quiet"]) == 0
    assert json.loads((run / "generator.json").read_text())["truncation"] == 0.7
    assert cli.main(["render", str(run), "--columns", "4", "--quiet"]) == 0
    assert (run / "codebook.png").is_file() and json.loads((run / "codebook.json").read_text())["codebook_size"] == 8
    assert cli.main(["edit", str(run), "--segment", "2", "--layers", "1-3", "--strengths", "-2", "0", "2",
                     "--n", "2", "--quiet"]) == 0
    record = json.loads((run / "edit_seg2_layers1-3.json").read_text())
    assert record["layers"] == [1, 3] and record["strengths"] == [-2.0, 0.0, 2.0]
    assert (run / "edit_seg2_layers1-3.png").is_file()
    for method in ("--ganspace", "--sefa"):  # the baselines on the same latents
        assert cli.main(["edit", str(run), method, "1", "--layers", "1-3", "--n", "2", "--quiet"]) == 0
        assert json.loads((run / f"edit_{method[2:]}1_layers1-3.json").read_text())["direction"] == f"{method[2:]}1"
    assert cli.main(["augment", str(run), "--segment", "0", "-n", "3", "--quiet"]) == 0
    assert len(json.loads((run / "augment_seg0" / "augment.json").read_text())["frames"]) == 3
    fails(["edit", str(run), "--segment", "7", "--quiet"], capsys, "--segment must be in [0, 6]")
    fails(["edit", str(run), "--segment", "1", "--layers", "4-9", "--quiet"], capsys, "outside the generator's 6 layers")
    fails(["render", str(tmp_path / "nothing")], capsys, "does not exist")
    fails(["edit", str(run), "--segment", "1", "--sefa", "0", "--quiet"], capsys, "exactly one of")
    fails(["fit", str(tmp_path / "x.npy"), "--generator", spec, "--bits", "3", "--out", str(tmp_path / "r2")], capsys,
          "not both")


def test_generator_files_that_must_be_refused(tmp_path, capsys, no_network):
    """Wrong shapes and garbage: a one-line error naming the file, exit code 2, no traceback."""
    from sfvq_ext.adapters import StyleGAN2Generator

    g = StyleGAN2Generator(16, style_dim=16, n_mlp=2, channels={4: 8, 8: 8, 16: 8})
    state = g.state_dict()
    state["to_rgb1.bias"] = torch.zeros(1, 12, 1, 1)
    torch.save({"g_ema": state}, tmp_path / "wrong_shape.pt")
    (tmp_path / "garbage.pt").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "garbage.pkl").write_bytes(b"\x80\x04 not really a pickle\n" * 8)
    clone = str(Path(__file__).resolve().parent / "standin_clones" / "stylegan2_ada")
    cases = [("wrong_shape.pt", [], "parameter to_rgb1.bias has shape (1, 12, 1, 1), but a StyleGAN2 generator of "
                                    "size 16 with these channel counts needs (1, 3, 1, 1)"),
             ("garbage.pt", [], "is not a PyTorch checkpoint"),
             ("garbage.pt", ["--trust-pickle"], "is not a PyTorch checkpoint"),
             ("garbage.pkl", ["--nvlabs-code", clone], "with the code in")]
    for name, extra, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["fit", "--generator", f"stylegan2:{tmp_path / name}", "--bits", "2", "--out",
                      str(tmp_path / "run"), "--quiet", *extra])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, err
        assert err.startswith("sfvq fit: error: ") and err.count("\n") == 1 and "Traceback" not in err
        assert message in err and str(tmp_path / name) in err
    assert not (tmp_path / "run").exists()


def test_class_help_says_what_it_applies_to(capsys):
    with pytest.raises(SystemExit):
        cli.main(["fit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--class CLASS_IDX class index, for class-conditional generators only: conditional StyleGAN2-ADA / " \
           "StyleGAN3 pickles" in text
    assert "and BigGAN (required;" in text


def test_quantize_with_a_bfloat16_curve_keeps_coordinates(data_file, tmp_path):
    """A 512-vector bfloat16 curve: coordinates above 256 are written in float64 (a
    bfloat16 coordinate could not tell 300 from 301), points as float32."""
    torch.manual_seed(0)
    x = torch.from_numpy(np.load(data_file))
    curve = sfvq_ext.SFVQ(dim=6, bits=9)
    with torch.no_grad():  # a curve through the data: vertex i at the i-th of 512 sorted samples
        order = torch.argsort(x[:, 0])
        curve.initialize(x[:4])
        for _ in range(7):
            curve.expand()
        curve.weight.copy_(x[order][torch.linspace(0, 299, 512).long()] + 0.01 * torch.randn(512, 6))
    curve = curve.to(torch.bfloat16)
    sfvq_ext.save(curve, tmp_path / "bf16.safetensors")
    out = tmp_path / "q"
    assert cli.main(["quantize", str(tmp_path / "bf16.safetensors"), str(data_file), "--out", str(out), "--quiet"]) == 0
    coords, segments = np.load(out / "coords.npy"), np.load(out / "segments.npy")
    points = np.load(out / "points.npy")
    assert coords.dtype == np.float64 and points.dtype == np.float32 and segments.max() > 256
    # every coordinate is its segment plus t, and decodes (in float64) to the stored point,
    # which the op returns in the codebook's dtype (bfloat16: 8 significant bits)
    t = coords - segments
    assert np.all((t >= 0) & (t <= 1)) and np.any((t > 0) & (t < 1) & (segments > 256))
    c = sfvq_ext.load(tmp_path / "bf16.safetensors").codebook.detach().double().numpy()
    decoded = (1 - t[:, None]) * c[segments] + t[:, None] * c[segments + 1]
    np.testing.assert_allclose(points, decoded, rtol=2**-8, atol=1e-6)
    # a bfloat16 coordinate would be wrong by up to 1 (its spacing is 2 above 256)
    assert np.abs(coords - torch.from_numpy(coords).bfloat16().double().numpy()).max() > 0.1
    d = sfvq_ext.directions(torch.from_numpy(c).bfloat16())
    assert d.dtype == torch.float32
