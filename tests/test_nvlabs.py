"""NVlabs pickles through stand-in clones (tests/standin_clones): StyleGAN2-ADA
(conditional), StyleGAN3, a TensorFlow-era pickle converted by the clone's own
legacy.py, and two different clones in one process. The oracle for every
generator is the clone's own code, run in a fresh process that knows only that
clone (standin_clones/make_pickles.py)."""

import copy
import json
import pickle
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from sfvq_ext import cli
from sfvq_ext.adapters import load_nvlabs

pytestmark = pytest.mark.usefixtures("no_network")

CLONES = Path(__file__).resolve().parent / "standin_clones"
ADA, SG3 = CLONES / "stylegan2_ada", CLONES / "stylegan3"
MAKE = CLONES / "make_pickles.py"
KWARGS = json.dumps(dict(z_dim=6, w_dim=5, img_resolution=8, img_channels=3))
NVLABS_NAMES = ("dnnlib", "torch_utils", "training", "legacy")


def replace_in(path, old, new):
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new))


def run_all(commands):
    """Run the helper commands in parallel; fail with their stderr if one fails."""
    procs = [subprocess.Popen([sys.executable, str(MAKE), *map(str, c)], stderr=subprocess.PIPE, text=True)
             for c in commands]
    for command, proc in zip(commands, procs):
        _, err = proc.communicate()
        assert proc.returncode == 0, f"{command}: {err}"


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    root = tmp_path_factory.mktemp("nvlabs")
    # a second StyleGAN2-ADA clone whose training.networks.Generator and torch_utils ops differ
    fork = root / "fork-clone"
    shutil.copytree(ADA, fork)
    replace_in(fork / "training" / "networks.py", "TORGB_GAIN = 1.0", "TORGB_GAIN = -0.5")
    replace_in(fork / "torch_utils" / "ops" / "bias_act.py", "NEGATIVE_SLOPE = 0.2", "NEGATIVE_SLOPE = 0.6")
    run_all([["tf-era", root / "tf"]])
    run_all([["network", ADA, "training.networks", KWARGS, 3, root / "ada"],
             ["network", fork, "training.networks", KWARGS, 0, root / "fork"],
             ["network", SG3, "training.networks_stylegan3", KWARGS, 0, root / "sg3"],
             ["oracle", ADA, root / "tf" / "tf.pkl", root / "tf" / "oracle.pt"]])
    return types.SimpleNamespace(
        root=root, fork=fork,
        pickles={"ada": root / "ada" / "network.pkl", "fork": root / "fork" / "network.pkl",
                 "sg3": root / "sg3" / "network.pkl", "tf": root / "tf" / "tf.pkl"},
        clones={"ada": ADA, "fork": fork, "sg3": SG3, "tf": ADA},
        oracles={k: torch.load(root / k / "oracle.pt") for k in ("ada", "fork", "sg3", "tf")},
        classes={"ada": 1, "fork": None, "sg3": None, "tf": None},
        tf_vars={k.replace("|", "/"): v for k, v in np.load(root / "tf" / "tf_vars.npz").items()})


def nvlabs_modules():
    return {name: module for name, module in sys.modules.items() if name.partition(".")[0] in NVLABS_NAMES}


def render_and_scale(adapter, w):
    """``adapter.render(w)`` and the largest |output| of any synthesis module during it."""
    largest = [0.0]

    def hook(module, inputs, output):
        if isinstance(output, torch.Tensor):
            largest[0] = max(largest[0], output.abs().max().item())

    handles = [m.register_forward_hook(hook) for m in adapter.G.synthesis.modules()]
    try:
        return adapter.render(w, progress=False), largest[0]
    finally:
        for handle in handles:
            handle.remove()


def check_against_oracle(adapter, standins, key):
    """W for the oracle's z, and the images of those W, as the clone's own code gives them."""
    oracle = standins.oracles[key]
    # W is exact: the same mapping code on the same inputs in fresh contiguous tensors (z cloned,
    # c built by zeros / one_hot) and one thread in both processes (make_pickles.py sets it too)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        w = adapter.map(oracle["z"].clone(), truncation=oracle["truncation"], class_idx=standins.classes[key])
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(w, oracle["ws"][:, 0], rtol=0, atol=0)
    # The images are not: the oracle gives synthesis the mapping's ws (each layer's w a strided,
    # offset slice), the adapter w expanded, and MKL's float32 GEMM rounds differently by stride
    # and alignment (measured 6e-8..6e-6; MKL_CBWR=COMPATIBLE removes it). Bound: each pixel ends
    # dot products of total length K (the synthesis weights' fan-ins); weights scaled by
    # 1/sqrt(fan-in) keep partial sums within the largest activation M, so an addition rounds by
    # <= M eps/2 and K of them, with random signs, by ~sqrt(K) M eps/2; two orders differ by twice
    # that; x4 for the tail (measured <= 0.11 eps sqrt(K) M). The worst case K M eps is ~1e-3 here
    # and would pass a 1e-3 error; this bound is <= 3e-4.
    images, largest = render_and_scale(adapter, w)
    fan_in = sum(p[0].numel() for name, p in adapter.G.synthesis.named_parameters()
                 if name.endswith("weight") and p.dim() >= 2)
    bound = 4 * torch.finfo(torch.float32).eps * fan_in ** 0.5 * largest
    assert (oracle["images"].abs() < 1).float().mean() > 0.5  # the comparison is not mostly clamped pixels
    torch.testing.assert_close(images, oracle["images"].clamp(-1, 1), rtol=0, atol=bound)


def test_conditional_stylegan2_ada_pickle(standins):
    before = nvlabs_modules()
    a = load_nvlabs(standins.pickles["ada"], ADA)
    assert (a.latent_dim, a.num_layers, a.c_dim) == (5, 3, 3)
    torch.testing.assert_close(a.G.mapping.w_avg, standins.oracles["ada"]["w_avg"])  # G_ema, not G
    check_against_oracle(a, standins, "ada")
    with pytest.raises(ValueError, match=r"conditional: class_idx must be in \[0, 2\], got None"):
        a.sample_latents(2)
    with pytest.raises(ValueError, match=r"class_idx must be in \[0, 2\], got 3"):
        a.sample_latents(2, class_idx=3)
    assert not torch.equal(a.sample_latents(2, class_idx=0), a.sample_latents(2, class_idx=2))
    # the clone's modules came from the clone and are not left in sys.modules
    assert {"dnnlib", "torch_utils.persistence", "torch_utils.ops.bias_act", "legacy"} <= set(a.code.modules)
    assert all(Path(m.__file__).is_relative_to(ADA) for m in a.code.modules.values())
    assert nvlabs_modules() == before
    twin = copy.deepcopy(a)  # shares the clone's modules
    assert twin.code is a.code and twin.G is not a.G
    check_against_oracle(twin, standins, "ada")


@pytest.mark.parametrize("other", ["fork", "sg3"])
def test_two_clones_in_one_process(standins, other):
    """Each pickle runs with its own clone's code, however the calls interleave."""
    a = load_nvlabs(standins.pickles["ada"], ADA)
    b = load_nvlabs(standins.pickles[other], standins.clones[other])
    for adapter, key in ((b, other), (a, "ada"), (b, other)):
        check_against_oracle(adapter, standins, key)
    assert a.code is not b.code and a.code.foreign_modules() == {} == b.code.foreign_modules()
    assert a.code.modules["torch_utils"] is not b.code.modules["torch_utils"]
    for adapter in (a, b):
        root = adapter.code.root
        assert all(Path(m.__file__).is_relative_to(root) for m in adapter.code.modules.values())
    assert load_nvlabs(standins.pickles["ada"], ADA).code is a.code  # one set of modules per clone


def test_the_named_clone_is_the_one_used(standins):
    """The StyleGAN3 pickle's code imports torch_utils.ops.filtered_lrelu, which only
    the StyleGAN3 clone has: with the ADA clone it must fail, whatever was loaded before."""
    load_nvlabs(standins.pickles["sg3"], SG3)
    with pytest.raises(ValueError, match=rf"cannot load .*sg3.*network\.pkl with the code in {ADA}.*filtered_lrelu"):
        load_nvlabs(standins.pickles["sg3"], ADA)
    b = load_nvlabs(standins.pickles["sg3"], SG3)
    assert b.num_layers == 5 and "torch_utils.ops.filtered_lrelu" in b.code.modules
    check_against_oracle(b, standins, "sg3")


def test_tf_era_pickle_converted_by_the_clones_legacy(standins, monkeypatch):
    # the user's own modules of the same names stay as they are
    mine = {name: types.ModuleType(name) for name in ("training", "legacy")}
    for name, module in mine.items():
        monkeypatch.setitem(sys.modules, name, module)
    a = load_nvlabs(standins.pickles["tf"], ADA)
    assert all(sys.modules[name] is module for name, module in mine.items())
    tf = standins.tf_vars
    assert (a.latent_dim, a.num_layers) == (5, 3)
    # the converted parameters are the TensorFlow variables (independent of the converter)
    torch.testing.assert_close(a.sample_latents(2, truncation=0.0), torch.from_numpy(tf["dlatent_avg"]).expand(2, -1))
    torch.testing.assert_close(a.G.mapping.fc1.weight, torch.from_numpy(tf["mapping/Dense1/weight"].T))
    torch.testing.assert_close(a.G.synthesis.layers[1].weight,
                               torch.from_numpy(tf["synthesis/Layer1/weight"].transpose(3, 2, 0, 1)))
    check_against_oracle(a, standins, "tf")
    assert all(sys.modules[name] is module for name, module in mine.items())


def test_tf_era_pickle_without_legacy_is_refused_clearly(standins, tmp_path):
    clone = tmp_path / "no-legacy"
    shutil.copytree(ADA, clone, ignore=shutil.ignore_patterns("legacy.py"))
    with pytest.raises(ValueError, match=r"tf\.pkl with the code in .*no-legacy: the clone has no legacy\.py.*"
                                         r"No module named 'dnnlib\.tflib'"):
        load_nvlabs(standins.pickles["tf"], clone)
    # a pickle of the clone's own format loads by plain unpickling
    check_against_oracle(load_nvlabs(standins.pickles["ada"], clone), standins, "ada")


def test_pickle_with_only_g_ema_loads_when_legacy_refuses_it(standins, tmp_path):
    """The real legacy.load_network_pkl asserts G and D are present; a G_ema-only
    pickle (as user scripts write) still loads, by plain unpickling."""
    code = (f"import pickle, sys; sys.path.insert(0, {str(ADA)!r}); import legacy\n"
            f"data = legacy.load_network_pkl(open({str(standins.pickles['ada'])!r}, 'rb'))\n"
            f"pickle.dump({{'G_ema': data['G_ema']}}, open({str(tmp_path / 'g_ema.pkl')!r}, 'wb'))")
    subprocess.run([sys.executable, "-c", code], check=True)
    a = load_nvlabs(tmp_path / "g_ema.pkl", ADA)
    check_against_oracle(a, standins, "ada")


def test_modules_resolved_outside_the_clone_are_refused(standins, tmp_path, monkeypatch):
    """A clone whose training/ lacks __init__.py: a regular `training` package elsewhere
    on sys.path wins the import, and the loader says so instead of using it silently."""
    clone = tmp_path / "broken-clone"
    shutil.copytree(ADA, clone)
    (clone / "training" / "__init__.py").unlink()
    shadow = tmp_path / "elsewhere"
    shutil.copytree(ADA / "training", shadow / "training")
    monkeypatch.syspath_prepend(str(shadow))
    with pytest.raises(ValueError, match=r"resolved modules outside nvlabs_code .*broken-clone: training\S* from "
                                         r".*elsewhere"):
        load_nvlabs(standins.pickles["tf"], clone)


def test_bad_nvlabs_files(tmp_path):
    (tmp_path / "junk.pkl").write_bytes(b"\x00not a pickle at all" * 10)
    with pytest.raises(ValueError, match=r"cannot load .*junk\.pkl with the code in .*stylegan2_ada.*plain unpickling"):
        load_nvlabs(tmp_path / "junk.pkl", ADA)
    with open(tmp_path / "dict.pkl", "wb") as f:
        pickle.dump({"weights": [1, 2]}, f)
    with pytest.raises(ValueError, match=r"dict\.pkl is not an NVlabs network pickle: it holds a dict without a "
                                         r"'G_ema' module \(keys: \['weights'\]\)"):
        load_nvlabs(tmp_path / "dict.pkl", ADA)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_nvlabs(tmp_path / "missing.pkl", ADA)
    with pytest.raises(FileNotFoundError, match=r"lacks dnnlib/, torch_utils/"):
        load_nvlabs(tmp_path / "dict.pkl", tmp_path)


def test_cli_with_conditional_stylegan_and_class(standins, tmp_path, capsys):
    spec = f"stylegan2:{standins.pickles['ada']}"
    run = tmp_path / "run"
    common = ["--nvlabs-code", str(ADA), "--quiet"]
    fit = ["fit", "--generator", spec, "--bits", "2", "--out", str(run), "--epochs", "1", "--batch-size", "32",
           "--samples-per-epoch", "64", *common]
    with pytest.raises(SystemExit) as exit_info:  # a conditional model needs its class
        cli.main(fit)
    assert exit_info.value.code == 2 and "conditional: class_idx must be in [0, 2]" in capsys.readouterr().err
    assert cli.main([*fit, "--class", "2"]) == 0
    assert json.loads((run / "generator.json").read_text())["class_idx"] == 2
    assert cli.main(["augment", str(run), "--segment", "1", "-n", "3", "--quiet"]) == 0
    assert len(list((run / "augment_seg1").glob("frame_*.png"))) == 3
    stylegan3 = f"stylegan3:{standins.pickles['sg3']}"
    assert cli.main(["fit", "--generator", stylegan3, "--bits", "2", "--out", str(tmp_path / "run3"), "--epochs", "1",
                     "--batch-size", "32", "--samples-per-epoch", "64", "--nvlabs-code", str(SG3), "--quiet"]) == 0
