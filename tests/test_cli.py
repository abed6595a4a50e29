"""The command line: `sfvq fit`, the generator commands, start-up imports
(`sfvq quantize`: tests/test_cli_quantize.py)."""

import json
import subprocess
import sys
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
    assert curve.current_codebook_size == 8 and curve.dim == 6
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
    fails(["fit", str(tmp_path / "missing.npy"), "--bits", "3", "--out", str(tmp_path / "r")], capsys, "does not exist")
    assert not (tmp_path / "r").exists()
    (tmp_path / "afile").write_text("")
    fails(fit_args(data_file, tmp_path / "afile"), capsys, "--out")  # a file, not a directory
    # a fit failing before its first checkpoint (a NaN row) leaves no --out behind
    bad = tmp_path / "bad.npy"
    np.save(bad, np.full((300, 6), np.nan, dtype=np.float32))
    fails(fit_args(bad, tmp_path / "nan_run"), capsys, "NaN or Inf")
    assert not (tmp_path / "nan_run").exists()


def test_fit_json_counts_training_time_across_resumes(data_file, tmp_path):
    """"seconds" is the sum of the stages' times (kept in the checkpoint), so resuming a
    finished run keeps it; "seconds_this_run" is each process's own."""
    out = tmp_path / "run"
    assert cli.main(fit_args(data_file, out)) == 0
    first = json.loads((out / "fit.json").read_text())
    assert first["seconds"] == pytest.approx(sum(stage["seconds"] for stage in first["history"]))
    assert 0 < first["seconds"] <= first["seconds_this_run"]
    assert first["preset"] == "default" and first["epochs"] == 1 and first["lr"] is None
    assert cli.main(fit_args(data_file, out, "--resume")) == 0
    again = json.loads((out / "fit.json").read_text())
    assert again["history"] == first["history"] and again["seconds"] == first["seconds"]
    assert again["seconds_this_run"] > 0


def test_fit_passes_only_the_settings_given(data_file, tmp_path, monkeypatch):
    """--epochs / --batch-size / --lr reach sfvq_ext.fit only when given (else the preset's
    apply); --preset always; fit.json records them as given and fit's settings as used."""
    calls, real_fit = [], sfvq_ext.fit

    def recording_fit(source, bits, **kwargs):
        calls.append(kwargs)
        module = real_fit(source, bits, epochs=1, batch_size=32, progress=False)  # small, whatever was asked
        module.fit_settings = {"epochs": 1, "batch_size": 32, "what": "fit's effective settings"}
        return module

    monkeypatch.setattr(sfvq_ext, "fit", recording_fit)
    given = {"epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr"}
    assert cli.main(["fit", str(data_file), "--bits", "3", "--out", str(tmp_path / "a"), "--quiet"]) == 0
    assert calls[-1]["preset"] == "default" and not set(given) & calls[-1].keys()
    assert cli.main(["fit", str(data_file), "--bits", "3", "--out", str(tmp_path / "b"), "--quiet",
                     "--preset", "authors", "--epochs", "2", "--lr", "0.01"]) == 0
    assert calls[-1]["preset"] == "authors" and calls[-1]["epochs"] == 2 and calls[-1]["lr"] == 0.01
    assert "batch_size" not in calls[-1]
    summary = json.loads((tmp_path / "b" / "fit.json").read_text())
    assert (summary["preset"], summary["epochs"], summary["batch_size"], summary["lr"]) == ("authors", 2, None, 0.01)
    assert summary["settings"] == {"epochs": 1, "batch_size": 32, "what": "fit's effective settings"}


def test_fit_help_names_the_presets(capsys):
    with pytest.raises(SystemExit):
        cli.main(["fit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--preset {default,authors}" in text
    for option in ("--epochs EPOCHS epochs per stage", "--batch-size BATCH_SIZE vectors per step", "--lr LR"):
        assert f"{option}" in text
    assert text.count("(default: the preset's)") == 3


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


def test_commands_import_only_what_they_use(tmp_path):
    """`import sfvq_ext.cli`, `sfvq --help`, `sfvq fit --help` and `sfvq quantize` load
    none of the plotting, imaging, generator or explorer code (and no scipy / sklearn)."""
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((20, 6)).astype(np.float32))
    module = sfvq_ext.SFVQ(dim=6, bits=2)
    module.initialize(torch.randn(4, 6))
    sfvq_ext.save(module, tmp_path / "curve.safetensors")
    heavy = ("matplotlib", "PIL", "scipy", "sklearn", "sfvq_ext.adapters", "sfvq_ext.explore", "sfvq_ext.fit_report",
             "sfvq_ext.demo")
    runs = {"import": None, "--help": ["--help"], "fit --help": ["fit", "--help"],
            "quantize": ["quantize", str(tmp_path / "curve.safetensors"), str(tmp_path / "x.npy"), "--out",
                         str(tmp_path / "q"), "--quiet"]}
    for name, argv in runs.items():
        call = "" if argv is None else f"try:\n    cli.main({argv!r})\nexcept SystemExit:\n    pass\n"
        code = f"import sys\nfrom sfvq_ext import cli\n{call}print('\\n'.join(sys.modules))"
        loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
        assert not [m for m in loaded if m.startswith(heavy)], (name, [m for m in loaded if m.startswith(heavy)])
    assert np.load(tmp_path / "q" / "coords.npy").shape == (20,)
