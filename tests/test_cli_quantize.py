"""`sfvq quantize` on a .npy file and on a directory of .npy shards: every output against
sfvq_ext.project on the rows read with numpy; layouts; --outputs; nothing half-written."""

import re

import numpy as np
import pytest
import torch

import sfvq_ext
from sfvq_ext import cli

ALL = ["coords", "distances", "points", "segments"]


@pytest.fixture
def curve(tmp_path):
    """An 8-vertex curve of width 6 through random points (no fit: independent of sfvq_ext.fit)."""
    module = sfvq_ext.SFVQ(dim=6, bits=3)
    with torch.no_grad():
        module.initialize(torch.randn(4, 6))
        module.expand()
        module.weight.copy_(torch.randn(8, 6))
    path = tmp_path / "curve.safetensors"
    sfvq_ext.save(module, path)
    return path


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "latents.npy"
    np.save(path, np.random.default_rng(0).standard_normal((300, 6)).astype(np.float32))
    return path


@pytest.fixture
def shards(tmp_path):
    """Four shards, written out of name order, of 40, 0, 53 and 31 rows (one float64,
    one float16), and a file that is not a shard."""
    folder = tmp_path / "shards"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name, rows, dtype in [("c.npy", 31, np.float16), ("a.npy", 40, np.float32), ("b0.npy", 0, np.float32),
                              ("b1.npy", 53, np.float64)]:
        np.save(folder / name, rng.standard_normal((rows, 6)).astype(dtype))
    (folder / "notes.txt").write_text("not a shard")
    return folder


def quantize(curve, data, out, *extra):
    return cli.main(["quantize", str(curve), str(data), "--out", str(out), "--quiet", *extra])


def fails(argv, capsys, message):
    """`sfvq quantize` (--quiet: no bar on stderr) exits with code 2 and one line holding message."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*argv, "--quiet"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def expected(curve, rows: np.ndarray) -> dict:
    """The oracle: sfvq_ext.project on the rows as float32, outputs in the CLI's dtypes."""
    r = sfvq_ext.project(torch.from_numpy(rows.astype(np.float32)), sfvq_ext.load(curve).codebook.detach())
    return {"points": r.point.numpy(), "coords": r.coord.double().numpy(), "segments": r.segment.numpy(),
            "distances": r.dist.double().numpy()}


def assert_outputs(files: dict, want: dict) -> None:
    """files: output name -> .npy path; each loaded array equals the oracle's."""
    assert sorted(files) == sorted(want)
    dtypes = {"points": np.float32, "coords": np.float64, "segments": np.int64, "distances": np.float64}
    for name, path in files.items():
        got = np.load(path)
        assert got.dtype == dtypes[name] and got.shape == want[name].shape, name
        if name in ("points", "segments"):
            np.testing.assert_array_equal(got, want[name], err_msg=name)
        else:
            np.testing.assert_allclose(got, want[name], rtol=1e-6, atol=1e-12, err_msg=name)


def tree(folder):
    """Every path under folder (relative, sorted), hidden temporaries included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_file_gives_one_file_per_output(curve, data_file, tmp_path):
    out = tmp_path / "q"
    assert quantize(curve, data_file, out, "--chunk", "70") == 0
    assert tree(out) == [f"{name}.npy" for name in ALL]
    assert_outputs({name: out / f"{name}.npy" for name in ALL}, expected(curve, np.load(data_file)))


def test_a_directory_gives_one_file_per_shard_and_output(curve, shards, tmp_path):
    """Chunks of 7 rows cross no shard boundary; every shard's outputs are its own rows'."""
    out = tmp_path / "q"
    assert quantize(curve, shards, out, "--chunk", "7") == 0
    names = ["a.npy", "b0.npy", "b1.npy", "c.npy"]
    assert tree(out) == sorted([*ALL, *(f"{kind}/{name}" for kind in ALL for name in names)])
    for name in names:
        assert_outputs({kind: out / kind / name for kind in ALL}, expected(curve, np.load(shards / name)))
    assert np.load(out / "points" / "b0.npy").shape == (0, 6)
    # OUT/points is itself a shard directory: it quantizes onto itself (distance 0, up to rounding)
    again = tmp_path / "again"
    assert quantize(curve, out / "points", again, "--outputs", "distances") == 0
    assert max(np.load(again / "distances" / name).max(initial=0) for name in names) < 1e-10


def test_concat_puts_the_shards_rows_in_name_order(curve, shards, tmp_path):
    out = tmp_path / "q"
    assert quantize(curve, shards, out, "--concat", "--chunk", "16") == 0
    assert tree(out) == [f"{name}.npy" for name in ALL]
    rows = np.concatenate([np.load(shards / n).astype(np.float32) for n in ["a.npy", "b0.npy", "b1.npy", "c.npy"]])
    assert len(rows) == 124
    assert_outputs({name: out / f"{name}.npy" for name in ALL}, expected(curve, rows))


def test_outputs_chooses_what_is_written(curve, data_file, shards, tmp_path, capsys):
    assert quantize(curve, data_file, tmp_path / "q", "--outputs", "segments,coords") == 0
    assert tree(tmp_path / "q") == ["coords.npy", "segments.npy"]
    want = expected(curve, np.load(data_file))
    assert_outputs({n: tmp_path / "q" / f"{n}.npy" for n in ["coords", "segments"]},
                   {n: want[n] for n in ["coords", "segments"]})
    assert quantize(curve, shards, tmp_path / "s", "--outputs", "distances") == 0
    assert tree(tmp_path / "s") == ["distances", *(f"distances/{n}" for n in ["a.npy", "b0.npy", "b1.npy", "c.npy"])]
    for bad in ["coord", "", "points,,x"]:
        with pytest.raises(SystemExit) as exit_info:
            quantize(curve, data_file, tmp_path / "bad", "--outputs", bad)
        assert exit_info.value.code == 2
        assert "expected a comma-separated list of points, coords, segments, distances" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_failure_leaves_nothing_new(curve, shards, tmp_path, capsys):
    """A NaN in the last shard's row 5: named by file and file row; a new --out (and its
    new parents) is removed; an existing --out keeps its old outputs, byte for byte."""
    bad = np.load(shards / "c.npy").astype(np.float32)
    bad[5, 3] = np.nan
    np.save(shards / "c.npy", bad)
    out = tmp_path / "new" / "deeper" / "q"
    fails(["quantize", str(curve), str(shards), "--out", str(out), "--chunk", "4"], capsys,
          f"{shards / 'c.npy'}: row 5 holds NaN or Inf")
    assert not (tmp_path / "new").exists()
    old = tmp_path / "old"
    old.mkdir()
    (old / "mine.txt").write_text("keep")
    np.save(old / "coords.npy", np.arange(3.0))
    before = {p: (old / p).read_bytes() for p in ["mine.txt", "coords.npy"]}
    for extra in ([], ["--concat"]):
        fails(["quantize", str(curve), str(shards), "--out", str(old), *extra], capsys, "row 5 holds NaN or Inf")
        assert tree(old) == ["coords.npy", "mine.txt"]
        assert {p: (old / p).read_bytes() for p in before} == before


def test_a_rerun_replaces_earlier_outputs(curve, shards, data_file, tmp_path):
    out = tmp_path / "q"
    assert quantize(curve, shards, out) == 0
    (shards / "c.npy").unlink()  # fewer shards now: the old OUT/*/c.npy must not survive
    assert quantize(curve, shards, out, "--outputs", "coords,points") == 0
    assert sorted(p.name for p in (out / "coords").iterdir()) == ["a.npy", "b0.npy", "b1.npy"]
    assert (out / "segments" / "c.npy").exists()  # not asked for this time: left as it was
    assert quantize(curve, data_file, out, "--outputs", "coords") == 0  # a file next to the directory
    assert_outputs({"coords": out / "coords.npy"}, {"coords": expected(curve, np.load(data_file))["coords"]})
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_bad_inputs_are_refused_with_one_line(curve, data_file, tmp_path, capsys):
    q = str(tmp_path / "q")
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((10, 5), np.float32))
    fails(["quantize", str(curve), str(wrong), "--out", q], capsys, "expected a float array (N, 6)")
    cube = tmp_path / "cube.npy"
    np.save(cube, np.zeros((4, 2, 6), np.float32))
    fails(["quantize", str(curve), str(cube), "--out", q], capsys,
          f"INPUT: {cube} must hold a 2-D floating-point array (N, dim), got shape (4, 2, 6)")
    ints = tmp_path / "ints.npy"
    np.save(ints, np.zeros((4, 6), np.int64))
    fails(["quantize", str(curve), str(ints), "--out", q], capsys, "dtype int64")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    np.save(mixed / "1.npy", np.zeros((3, 6), np.float32))
    np.save(mixed / "2.npy", np.zeros((3, 7), np.float32))
    fails(["quantize", str(curve), str(mixed), "--out", q], capsys, "differ in width: 1.npy has 6, 2.npy has 7")
    (tmp_path / "empty").mkdir()
    fails(["quantize", str(curve), str(tmp_path / "empty"), "--out", q], capsys, "holds no .npy files")
    fails(["quantize", str(curve), str(tmp_path / "missing.npy"), "--out", q], capsys, "does not exist")
    fails(["quantize", str(wrong), str(data_file), "--out", q], capsys, "unreadable")
    fails(["quantize", str(curve), str(data_file), "--out", q, "--chunk", "0"], capsys, "--chunk must be a positive")
    fails(["quantize", str(curve), str(data_file), "--out", str(data_file)], capsys, "exists and is not a directory")
    assert not (tmp_path / "q").exists()


def test_bad_rows_are_named_by_their_row_in_the_file(curve, data_file, tmp_path, capsys):
    """Not the chunk's row; finite float64 values float32 cannot hold are not called NaN;
    an .npz archive gets a one-line error."""
    x = np.load(data_file).astype(np.float64)
    x[137, 2] = np.nan
    nan_file = tmp_path / "nan.npy"
    np.save(nan_file, x)
    fails(["quantize", str(curve), str(nan_file), "--out", str(tmp_path / "q"), "--chunk", "50"], capsys,
          "row 137 holds NaN or Inf")
    x[137, 2] = 0.0
    x[151, 0] = 1e100
    np.save(nan_file, x)
    fails(["quantize", str(curve), str(nan_file), "--out", str(tmp_path / "q"), "--chunk", "50"], capsys,
          "row 151 has values beyond float32's range")
    archive = tmp_path / "x.npz"
    np.savez(archive, x=x)
    fails(["quantize", str(curve), str(archive), "--out", str(tmp_path / "q")], capsys, "not a single .npy array")
    assert not (tmp_path / "q").exists()


def test_one_progress_bar_counts_all_rows(curve, shards, tmp_path, capsys):
    assert cli.main(["quantize", str(curve), str(shards), "--out", str(tmp_path / "q"), "--chunk", "9"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rows" in err  # one bar, closed once
    assert re.search(r"100%.*\b124(\.0)?/124(\.0)? ", err.rsplit("\r", 1)[-1]), err
    assert quantize(curve, shards, tmp_path / "q2") == 0
    assert capsys.readouterr().err == ""


def test_a_bfloat16_curve_keeps_coordinates(data_file, tmp_path):
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


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_low_precision_curve_does_not_round_the_rows(dtype, data_file, tmp_path):
    """A bfloat16/float16 curve searches float32 rows in float32 (issue 22): the oracle is the
    float32 projection onto the same vertices upcast (exact), not onto rows rounded to the curve's dtype."""
    module = sfvq_ext.SFVQ(dim=6, bits=3, dtype=dtype)
    with torch.no_grad():
        module.initialize(torch.randn(4, 6))
        module.expand()
        module.weight.copy_(torch.randn(8, 6, generator=torch.Generator().manual_seed(5)))
    path = tmp_path / "low.safetensors"
    sfvq_ext.save(module, path)
    out = tmp_path / "q"
    assert quantize(path, data_file, out) == 0
    rows = torch.from_numpy(np.load(data_file))
    want = sfvq_ext.project(rows, module.codebook.detach().float())
    np.testing.assert_array_equal(np.load(out / "segments.npy"), want.segment.numpy())
    np.testing.assert_allclose(np.load(out / "coords.npy"), want.coord.double().numpy(), rtol=1e-6, atol=1e-12)
    rounded = sfvq_ext.project(rows.to(dtype), module.codebook.detach())  # what the search did before
    assert not np.array_equal(np.load(out / "coords.npy"), rounded.coord.double().numpy())
