"""The demo: the procedural world, the shipped generator and probe (with the
probe's required accuracy on held-out images), the training scripts in
miniature, the measurement of directions, and `sfvq demo` end to end."""

import json
import re

import pytest
import torch

from sfvq_ext.demo import load_generator, load_probe, world
from sfvq_ext.demo.measure import dominance, edit_step, factor_changes, layer_factor_changes, method_score
from sfvq_ext.demo.probe import scores

pytestmark = pytest.mark.usefixtures("no_network")


def test_world_is_deterministic_and_in_range():
    a, b = world.sample_factors(50, seed=3), world.sample_factors(50, seed=3)
    assert all(torch.equal(a[k], b[k]) for k in world.FACTORS)
    for k, (low, high) in world.RANGES.items():
        assert a[k].min() >= low and a[k].max() <= high
    images = world.render(a)
    assert images.shape == (50, 3, 32, 32) and images.min() >= -1 and images.max() <= 1
    assert torch.equal(images, world.render(b))


@pytest.mark.parametrize("factor", world.FACTORS)
def test_every_factor_changes_the_image(factor):
    f = world.sample_factors(20, seed=1)
    g = {k: v.clone() for k, v in f.items()}
    if factor == "shape":
        g["shape"] = (g["shape"] + 1) % 3
    else:
        low, high = world.RANGES[factor]
        g[factor] = low + high - g[factor]  # reflect within the range
    changed = (world.render(f) - world.render(g)).abs().flatten(1).amax(1)
    assert (changed > 0.1).float().mean() > 0.9


def test_hsv_primaries():
    rgb = world.hsv_to_rgb(torch.tensor([0.0, 1 / 3, 2 / 3]))
    torch.testing.assert_close(rgb, torch.eye(3))


def test_shipped_probe_reads_factors_on_held_out_images():
    """The issue's bar: R^2 >= 0.9 for every continuous factor, >= 95% shape accuracy,
    on images from seeds the probe never trained on."""
    factors = world.sample_factors(1000, seed=987654)
    result = scores(load_probe(), world.render(factors), factors)
    assert result["shape_accuracy"] >= 0.95, result
    for k in world.CONTINUOUS:
        assert result[f"r2_{k}"] >= 0.9, result


def test_shipped_generator_draws_shapes_the_probe_recognises():
    g = load_generator()
    assert (g.latent_dim, g.num_layers) == (64, 8)
    images = g.render(g.sample_latents(64, seed=5), progress=False)
    assert images.shape == (64, 3, 32, 32)
    probs, values = load_probe().read(images)
    # a confident shape for most images (measured: 80% above 0.8), and all three shapes among them
    assert (probs.max(1).values > 0.8).float().mean() > 0.6
    assert len(set(probs.argmax(1).tolist())) == 3


def test_shipped_generator_was_trained_with_style_mixing_and_splits_its_layers():
    """The shipped weights record StyleGAN2's style mixing and the world they were trained
    on; single-layer edits (benchmarks/layer_factors.py in small) move pose and shape
    most on the coarse layers, hue in the middle and the background on the fine ones."""
    g = load_generator()
    info = g.G.training_info
    assert info["style_mixing_prob"] == 0.9 and info["world_factors"] == list(world.FACTORS)
    probe = load_probe()
    step = edit_step(g.sample_latents(4096, seed=1))
    latents = g.sample_latents(16, seed=2)
    directions = torch.nn.functional.normalize(torch.randn(8, 64, generator=torch.Generator().manual_seed(3)), dim=1)
    by_layer = layer_factor_changes(g, probe, latents, directions, step)  # (layers, factors)
    peak = dict(zip(world.FACTORS, by_layer.argmax(0).tolist()))
    assert all(peak[f] <= 1 for f in ("shape", "size", "x", "y", "rotation")), peak
    assert 2 <= peak["hue"] <= 5 and peak["background"] >= 5, peak


def test_measurement_of_directions():
    g, probe = load_generator(), load_probe()
    latents = g.sample_latents(8, seed=1)
    zero = factor_changes(g, probe, latents, torch.zeros(1, 64), 1.0)
    assert zero.shape == (1, len(world.FACTORS)) and torch.all(zero == 0)
    moved = factor_changes(g, probe, latents, torch.eye(64)[:2], edit_step(g.sample_latents(500)))
    assert torch.all(moved.sum(1) > 0)
    changes = torch.tensor([[0.0, 0.5, 0.0, 0, 0, 0, 0], [0.1, 0.1, 0.1, 0.1, 0, 0, 0], [0.0] * 6 + [0.01]])
    torch.testing.assert_close(dominance(changes), torch.tensor([1.0, 0.25, 1.0]))
    assert method_score(changes, top=2) == pytest.approx((0.625, 0.45))


def test_training_scripts_in_miniature(tmp_path):
    from sfvq_ext.demo import train_gan
    from sfvq_ext.demo.probe import FactorProbe, train as train_probe

    train_gan.main(["--out", str(tmp_path), "--steps", "2", "--batch", "4", "--dataset-size", "16", "--r1-every", "1",
                    "--sample-every", "0"])
    g = load_generator(tmp_path / "shapes_stylegan2.safetensors")
    assert g.render(g.sample_latents(2), progress=False).shape == (2, 3, 32, 32)
    assert g.G.training_info["steps"] == 2 and g.G.training_info["style_mixing_prob"] == 0.9
    assert g.G.training_info["world_factors"] == list(world.FACTORS)
    probe, result = train_probe(train_size=64, test_size=16, epochs=1, batch=32, lr=1e-3, seed=0, threads=None)
    assert isinstance(probe, FactorProbe) and set(result) == {"shape_accuracy", *(f"r2_{k}" for k in world.CONTINUOUS)}


def test_style_mixing_takes_the_layers_from_a_crossover_on_from_a_second_latent():
    """train_gan.generate: with probability 1 the batch is two latents' W, the second from
    one crossover layer in [1, num_ws) on (StyleGAN2's style mixing); with 0 it is G(z)."""
    from sfvq_ext.demo.train_gan import generate, make_generator

    G = make_generator()
    G.set_w_avg(samples=64)
    for trial in range(4):
        torch.manual_seed(trial)
        images = generate(G, 3, 1.0, torch.Generator().manual_seed(trial))
        torch.manual_seed(trial)
        w1, w2 = G.mapping(torch.randn(3, G.z_dim)), G.mapping(torch.randn(3, G.z_dim))
        matches = []
        for cutoff in range(1, G.num_ws):
            ws = torch.cat([w1[:, :cutoff], w2[:, cutoff:]], dim=1)
            if torch.allclose(G.synthesis(ws), images, rtol=0, atol=1e-6):
                matches.append(cutoff)
        assert len(matches) == 1, matches
    torch.manual_seed(7)
    plain = generate(G, 3, 0.0, torch.Generator().manual_seed(0))
    torch.manual_seed(7)
    torch.testing.assert_close(plain, G(torch.randn(3, G.z_dim)), rtol=0, atol=1e-6)


def test_demo_end_to_end(tmp_path):
    from sfvq_ext.demo.report import run_demo
    from sfvq_ext.demo.screenshot import broken_links

    page = run_demo(tmp_path / "demo", bits=3, epochs=1, samples_per_epoch=2048, progress=False)
    text = page.read_text()
    images = re.findall(r'src="([^"]+)"', text)
    assert len(images) >= 10 and not broken_links(page)
    for name in ("codebook.png", "fit.png", "edit_ganspace_0.png", "edit_sefa_0.png", "augment/sheet.png"):
        assert name in images
    assert "dominance" in text and (tmp_path / "demo" / "demo.json").is_file()
    # the explorer, linked from the report, with the factor probe's table
    assert 'href="explore/index.html"' in text
    explorer = tmp_path / "demo" / "explore" / "index.html"
    assert not broken_links(explorer) and "probe-table" in explorer.read_text()
    data = json.loads((tmp_path / "demo" / "explore" / "explore.json").read_text())
    assert len(data["strip"]) == 8 and data["num_layers"] == 8
    assert all(s["probe_top"] in world.FACTORS for s in data["segments"])
    # the run names its generator, so the CLI's generator commands work on it as on a fit run
    from sfvq_ext import cli

    assert json.loads((tmp_path / "demo" / "generator.json").read_text()) == {"spec": "demo"}
    assert cli.main(["render", str(tmp_path / "demo"), "--quiet"]) == 0
    assert (tmp_path / "demo" / "codebook.png").is_file()


def test_demo_generator_spec():
    """`--generator demo` opens the shipped generator: the same images as load_generator()."""
    from sfvq_ext.commands.generators import open_generator

    g = open_generator("demo")
    w = g.sample_latents(3, seed=5)
    assert torch.equal(g.render(w, progress=False), load_generator().render(w, progress=False))
    with pytest.raises(ValueError, match="demo"):
        open_generator("nonsense:x")


def test_factor_probe_is_one_bring_your_own_probe():
    """factor_changes goes through the generic probe table; its numbers are the factor
    probe's own readings (shape: total-variation distance; factors: mean |change|)."""
    from sfvq_ext.demo.measure import FactorScores
    from sfvq_ext.interpret import probe_table

    g, probe = load_generator(), load_probe()
    latents = g.sample_latents(6, seed=4)
    dirs = torch.nn.functional.normalize(torch.randn(2, 64, generator=torch.Generator().manual_seed(1)), dim=1)
    changes = factor_changes(g, probe, latents, dirs, 1.5, layers=[range(0, 3), None])
    base_p, base_v = probe.read(g.render(latents, progress=False))
    for m, layers in enumerate([range(0, 3), None]):
        p, v = probe.read(g.render(g.apply_direction(latents, dirs[m], 1.5, layers=layers), progress=False))
        want = torch.cat([(0.5 * (p - base_p).abs().sum(1).mean())[None], (v - base_v).abs().mean(0)])
        torch.testing.assert_close(changes[m], want, rtol=1e-5, atol=1e-7)
    table = probe_table(g, FactorScores(probe), latents, dirs, 1.5, progress=False)
    assert table.names == list(world.FACTORS) and table.top[0] == world.FACTORS[int(table.changes[0].argmax())]
