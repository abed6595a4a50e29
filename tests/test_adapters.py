"""Generator adapters on tiny randomly initialised generators: our StyleGAN2
against independent statements of its parts and of the rosinality file layout,
the adapter contract (seeds, rendering, edits by layer), NVlabs pickles through a
stand-in clone, bring-your-own callables, bad input, and no network access."""

import argparse
import math
import pickle
import re
import socket
import subprocess
import sys
import textwrap
import zipfile

import pytest
import torch
import torch.nn.functional as F

import sfvq_ext
from sfvq_ext.adapters import (CallableAdapter, GeneratorAdapter, StyleGAN2Adapter, StyleGAN2Generator, load_nvlabs, load_rosinality,
                               save_rosinality)
from sfvq_ext.adapters.stylegan2_arch import ModulatedConv2d, blur_kernel_2d, upfirdn2d

TINY = dict(style_dim=32, n_mlp=2, channels={4: 16, 8: 16, 16: 8, 32: 8})


pytestmark = pytest.mark.usefixtures("no_network")  # conftest: any network connection fails the test


def test_no_network_guard_works():
    with pytest.raises(AssertionError, match="network"):
        socket.create_connection(("127.0.0.1", 9))


def tiny_generator(seed=0, size=32):
    torch.manual_seed(seed)
    g = StyleGAN2Generator(size, **TINY)
    g.set_w_avg()
    return g


def test_tiny_generator_size():
    g = tiny_generator()
    assert sum(p.numel() for p in g.parameters()) <= 1_000_000 and g.num_ws == 8
    assert g.synthesis(g.mapping(torch.randn(2, 32))).shape == (2, 3, 32, 32)


def test_rosinality_key_layout():
    """The state dict a rosinality Generator(size=8, style_dim=S, n_mlp=2) saves,
    written out from that format's description: names and shapes."""
    S, C4, C8 = 32, 16, 16
    want = {"style.1.weight": (S, S), "style.1.bias": (S,), "style.2.weight": (S, S), "style.2.bias": (S,),
            "input.input": (1, C4, 4, 4), "noises.noise_0": (1, 1, 4, 4), "noises.noise_1": (1, 1, 8, 8),
            "noises.noise_2": (1, 1, 8, 8), "to_rgb1.bias": (1, 3, 1, 1), "to_rgb1.conv.weight": (1, 3, C4, 1, 1),
            "to_rgb1.conv.modulation.weight": (C4, S), "to_rgb1.conv.modulation.bias": (C4,),
            "to_rgbs.0.bias": (1, 3, 1, 1), "to_rgbs.0.conv.weight": (1, 3, C8, 1, 1),
            "to_rgbs.0.conv.modulation.weight": (C8, S), "to_rgbs.0.conv.modulation.bias": (C8,),
            "to_rgbs.0.upsample.kernel": (4, 4), "convs.0.conv.blur.kernel": (4, 4)}
    for name, cin, cout in (("conv1", C4, C4), ("convs.0", C4, C8), ("convs.1", C8, C8)):
        want.update({f"{name}.conv.weight": (1, cout, cin, 3, 3), f"{name}.conv.modulation.weight": (cin, S),
                     f"{name}.conv.modulation.bias": (cin,), f"{name}.noise.weight": (1,),
                     f"{name}.activate.bias": (cout,)})
    g = StyleGAN2Generator(8, style_dim=S, n_mlp=2, channels={4: C4, 8: C8})
    got = {k: tuple(v.shape) for k, v in g.state_dict().items()}
    assert got == want
    # the blur kernels are the normalised [1, 3, 3, 1] outer product with the 2x upsampling gain
    torch.testing.assert_close(g.state_dict()["convs.0.conv.blur.kernel"],
                               torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 16)


def upfirdn2d_by_definition(x, k, up, pad):
    """Zero-insertion upsampling, padding, then out[i, j] = sum_ab xp[i + a, j + b] k[-1 - a, -1 - b]."""
    b, c, h, w = x.shape
    xu = torch.zeros(b, c, h * up, w * up, dtype=x.dtype)
    xu[:, :, ::up, ::up] = x
    xp = F.pad(xu, [pad[0], pad[1], pad[0], pad[1]])
    kh = k.shape[0]
    H, W = xp.shape[2] - kh + 1, xp.shape[3] - kh + 1
    out = torch.zeros(b, c, H, W, dtype=x.dtype)
    for i in range(H):
        for j in range(W):
            out[:, :, i, j] = (xp[:, :, i : i + kh, j : j + kh] * k.flip([0, 1])).sum((-1, -2))
    return out


@pytest.mark.parametrize("up,pad", [(1, (1, 1)), (2, (2, 1)), (1, (2, 2))])
def test_upfirdn2d_matches_definition(up, pad):
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    k = torch.rand(4, 4, dtype=torch.float64)  # not symmetric: the flip matters
    torch.testing.assert_close(upfirdn2d(x, k, up=up, pad=pad), upfirdn2d_by_definition(x, k, up, pad))


@pytest.mark.parametrize("upsample", [False, True])
@pytest.mark.parametrize("demodulate", [False, True])
def test_modulated_conv_matches_per_sample_loop(upsample, demodulate):
    conv = ModulatedConv2d(4, 5, 3, 8, demodulate=demodulate, upsample=upsample).double()
    x, style = torch.randn(3, 4, 6, 6, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64)
    got = conv(x, style)
    for n in range(3):
        s = F.linear(style[n], conv.modulation.weight * conv.modulation.scale, conv.modulation.bias)
        w = conv.scale * conv.weight[0] * s[None, :, None, None]  # (out, in, k, k)
        if demodulate:
            w = w / torch.sqrt(w.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        if upsample:
            y = F.conv_transpose2d(x[n : n + 1], w.transpose(0, 1), stride=2)
            y = upfirdn2d_by_definition(y, blur_kernel_2d().double() * 4, 1, (1, 1))
        else:
            y = F.conv2d(x[n : n + 1], w, padding=1)
        torch.testing.assert_close(got[n : n + 1], y)
    assert got.shape[-1] == (12 if upsample else 6)


def test_rosinality_checkpoint_round_trip(tmp_path):
    g = tiny_generator()
    path = tmp_path / "stylegan2.pt"
    save_rosinality(g, path)
    adapter = load_rosinality(path)
    assert (adapter.latent_dim, adapter.num_layers) == (32, 8)
    torch.testing.assert_close(adapter.G.w_avg, g.w_avg)
    w = torch.randn(4, 32)
    torch.testing.assert_close(adapter.render(w, progress=False), g.synthesis(w).clamp(-1, 1))


def test_rosinality_checkpoint_with_arguments_needs_opt_in(tmp_path):
    g = tiny_generator()
    path = tmp_path / "with_args.pt"
    torch.save({"g_ema": g.state_dict(), "latent_avg": g.w_avg, "args": argparse.Namespace(size=32)}, path)
    with pytest.raises(ValueError, match="trust_pickle=True"):
        load_rosinality(path)
    assert load_rosinality(path, trust_pickle=True).num_layers == 8


def test_wrong_checkpoints_are_refused(tmp_path):
    torch.save({"g_ema": {"weight": torch.zeros(3)}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a StyleGAN2 generator state dict"):
        load_rosinality(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        load_rosinality(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        load_rosinality(tmp_path / "missing.pt")
    with pytest.raises(TypeError, match="lacks"):
        StyleGAN2Adapter(torch.nn.Linear(2, 2))


def test_adapter_contract():
    a = StyleGAN2Adapter(tiny_generator())
    w1, w2 = a.sample_latents(6, seed=3), a.sample_latents(6, seed=3)
    assert w1.shape == (6, 32) and torch.equal(w1, w2)
    assert not torch.equal(w1, a.sample_latents(6, seed=4))
    torch.testing.assert_close(a.sample_latents(3, seed=3, truncation=0.0), a.G.w_avg.expand(3, -1))
    # rendering is batched and deterministic: batch size does not change the images
    torch.testing.assert_close(a.render(w1, batch_size=4, progress=False), a.render(w1, batch_size=6, progress=False))
    # strength 0 is the identity; a layer range edits only those layers
    d = sfvq_ext.directions(torch.randn(5, 32))[1]
    assert torch.equal(a.apply_direction(w1, d, 0.0), w1)
    edited = a.apply_direction(w1, d, 2.0, layers=range(3, 6))
    assert edited.shape == (6, 8, 32)
    for layer in range(8):
        moved = not torch.equal(edited[:, layer], w1)
        assert moved == (layer in (3, 4, 5))
    torch.testing.assert_close(edited[:, 4] - w1, 2.0 * d.expand(6, -1))
    torch.testing.assert_close(a.apply_direction(w1, d, 2.0, layers=(3, 5)), edited)  # (first, last) inclusive
    assert a.render(edited, progress=False).shape == (6, 3, 32, 32)
    # only the chosen layers change the image
    assert not torch.equal(a.render(edited, progress=False), a.render(w1, progress=False))


def test_adapter_bad_input():
    a = StyleGAN2Adapter(tiny_generator())
    w = a.sample_latents(2)
    with pytest.raises(ValueError, match=r"shape \(n, 32\) or \(n, 8, 32\)"):
        a.render(torch.randn(2, 31))
    with pytest.raises(ValueError, match=r"layers \[8, 9\] are outside"):
        a.apply_direction(w, torch.zeros(32), 1.0, layers=range(6, 10))
    with pytest.raises(ValueError, match="direction must have shape"):
        a.apply_direction(w, torch.zeros(31), 1.0)
    with pytest.raises(ValueError, match="unconditional"):
        a.sample_latents(2, class_idx=3)
    with pytest.raises(ValueError, match="NaN"):
        a.render(torch.full((1, 32), float("nan")))


def test_segment_points_walk_the_segment():
    c = torch.randn(6, 4)
    pts = StyleGAN2Adapter.segment_points(c, 2, 5)
    torch.testing.assert_close(pts[0], c[2])
    torch.testing.assert_close(pts[-1], c[3])
    torch.testing.assert_close(pts[2], (c[2] + c[3]) / 2)
    with pytest.raises(ValueError, match=r"segment must be an int in \[0, 4\]"):
        StyleGAN2Adapter.segment_points(c, 5, 3)


def test_directions_are_unit_segment_vectors():
    c = torch.tensor([[0.0, 0.0], [3.0, 4.0], [3.0, 4.0], [3.0, 5.0]])
    torch.testing.assert_close(sfvq_ext.directions(c), torch.tensor([[0.6, 0.8], [0.0, 0.0], [0.0, 1.0]]))


def test_callable_adapter():
    a = CallableAdapter(lambda n, g: torch.randn(n, 4, generator=g),
                        lambda z: torch.tanh(z[:, :3, None, None].expand(-1, 3, 8, 8)), latent_dim=4)
    z = a.sample_latents(5, seed=1)
    assert torch.equal(z, a.sample_latents(5, seed=1))
    assert a.render(z, batch_size=2, progress=False).shape == (5, 3, 8, 8)
    with pytest.raises(ValueError, match="no W\\+ layers"):
        a.apply_direction(z, torch.ones(4), 1.0, layers=range(1))
    bad = CallableAdapter(lambda n, g: torch.randn(n, 4, generator=g), lambda z: z, latent_dim=4)
    with pytest.raises(ValueError, match=r"render must return images \(n, 3, H, W\)"):
        bad.render(z, progress=False)


NVLABS_NETWORK = '''
import torch

class MappingNetwork(torch.nn.Module):
    def __init__(self, z_dim, w_dim, num_ws):
        super().__init__()
        self.fc = torch.nn.Linear(z_dim, w_dim)
        self.num_ws = num_ws
        self.register_buffer("w_avg", torch.zeros(w_dim))
    def forward(self, z, c, truncation_psi=1.0):
        w = self.fc(z)
        w = self.w_avg + truncation_psi * (w - self.w_avg)
        return w[:, None].repeat(1, self.num_ws, 1)

class SynthesisNetwork(torch.nn.Module):
    def __init__(self, w_dim, num_ws):
        super().__init__()
        self.fc = torch.nn.Linear(w_dim * num_ws, 3 * 8 * 8)
    def forward(self, ws, noise_mode="random", force_fp32=False):
        assert noise_mode == "const"
        return torch.tanh(self.fc(ws.flatten(1))).view(-1, 3, 8, 8)

class Generator(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = 6, 0, 5, 4
        self.mapping = MappingNetwork(6, 5, 4)
        self.synthesis = SynthesisNetwork(5, 4)
'''


def test_nvlabs_pickle_through_a_stand_in_clone(tmp_path):
    """A stand-in for the user's NVlabs clone: dnnlib/, torch_utils/ and a network
    module the pickle refers to (as real NVlabs pickles refer to their code)."""
    clone = tmp_path / "stylegan2-ada-pytorch"
    for package in ("dnnlib", "torch_utils", "training"):
        (clone / package).mkdir(parents=True)
        (clone / package / "__init__.py").write_text("")
    (clone / "training" / "networks.py").write_text(NVLABS_NETWORK)
    pkl = tmp_path / "network.pkl"
    code = textwrap.dedent(f"""
        import sys, pickle, torch
        sys.path.insert(0, {str(clone)!r})
        from training.networks import Generator
        torch.manual_seed(0)
        with open({str(pkl)!r}, "wb") as f:
            pickle.dump({{"G_ema": Generator(), "D": None}}, f)
    """)
    subprocess.run([sys.executable, "-c", code], check=True)
    a = load_nvlabs(pkl, clone)
    assert (a.latent_dim, a.num_layers) == (5, 4)
    w = a.sample_latents(3, seed=0)
    assert w.shape == (3, 5) and a.render(w, progress=False).shape == (3, 3, 8, 8)
    with pytest.raises(FileNotFoundError, match=r"lacks dnnlib/, torch_utils/"):
        load_nvlabs(pkl, tmp_path / "not-a-clone")


def tiny_biggan(seed=0):
    """A randomly initialised BigGAN of the package's architecture, 32 px. As the
    package leaves them, the non-conditional batch-norm parameters are uninitialised
    memory and spectral norm has not estimated any singular vector: set those (1, 0)
    and run a few power iterations in train mode, as a trained model would have."""
    from pytorch_pretrained_biggan import BigGAN, BigGANConfig

    torch.manual_seed(seed)
    config = BigGANConfig(output_dim=32, z_dim=16, class_embed_dim=16, channel_width=4, num_classes=10,
                          layers=[(True, 16, 8), (True, 8, 4), (True, 4, 2), (False, 2, 1)], attention_layer_position=1)
    model = BigGAN(config)
    with torch.no_grad():
        model.generator.bn.weight.fill_(1.0)
        model.generator.bn.bias.zero_()
        model.train()
        for _ in range(5):
            model(torch.randn(2, 16), F.one_hot(torch.tensor([1, 2]), 10).float(), 0.5)
    return model.eval()


def test_biggan_save_load_round_trip_and_contract(tmp_path):
    from pytorch_pretrained_biggan.model import CONFIG_NAME, WEIGHTS_NAME

    from sfvq_ext.adapters import load_biggan

    model = tiny_biggan()
    assert sum(p.numel() for p in model.parameters()) <= 1_000_000
    (tmp_path / CONFIG_NAME).write_text(model.config.to_json_string())
    torch.save(model.state_dict(), tmp_path / WEIGHTS_NAME)
    a = load_biggan(tmp_path, class_idx=3, truncation=0.5)
    z = a.sample_latents(4, seed=2)
    assert z.shape == (4, 16) and torch.equal(z, a.sample_latents(4, seed=2)) and z.abs().max() <= 2 * 0.5
    images = a.render(z, batch_size=3, progress=False)
    assert images.shape == (4, 3, 32, 32) and torch.isfinite(images).all()
    with torch.no_grad():  # the same images as the model itself gives
        want = model(z, F.one_hot(torch.full((4,), 3), 10).float(), 0.5)
    torch.testing.assert_close(images, want)
    # z + class embedding: the same image for the same z and class, and the class can move
    ac = load_biggan(tmp_path, class_idx=3, latent="z+class", truncation=0.5)
    zc = ac.sample_latents(4, seed=2)
    assert zc.shape == (4, 32) and ac.latent_dim == 32
    torch.testing.assert_close(ac.render(zc, progress=False), images)
    assert not torch.equal(ac.sample_latents(4, seed=2, class_idx=4), zc)
    assert torch.equal(a.apply_direction(z, torch.ones(16), 0.0), z)
    sampler = a.latent_sampler()
    assert sampler(5, torch.Generator().manual_seed(0)).shape == (5, 16)


def test_biggan_bad_input(tmp_path):
    from sfvq_ext.adapters import BigGANAdapter, load_biggan

    with pytest.raises(FileNotFoundError, match="config.json"):
        load_biggan(tmp_path, class_idx=0)
    model = tiny_biggan()
    (tmp_path / "config.json").write_text(model.config.to_json_string())
    torch.save({"something": torch.zeros(2)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="is not a BigGAN"):
        load_biggan(tmp_path, class_idx=0)
    with pytest.raises(ValueError, match=r"class_idx must be in \[0, 9\]"):
        BigGANAdapter(model, class_idx=10)
    with pytest.raises(ValueError, match="class is fixed"):
        BigGANAdapter(model, class_idx=1).sample_latents(2, class_idx=2)


def test_biggan_truncation_reaches_the_generator():
    """BigGAN picks its batch-norm statistics by the truncation value: the value the
    latents were drawn with is the one the generator receives, or the call is refused."""
    from sfvq_ext.adapters import BigGANAdapter

    model = tiny_biggan()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # as a trained BigGAN has: batch-norm statistics per truncation value
        for name, buffer in model.named_buffers():
            if name.endswith("running_means"):
                buffer.copy_(0.3 * torch.randn(buffer.shape, generator=gen))
            elif name.endswith("running_vars"):
                buffer.copy_(0.5 + torch.rand(buffer.shape, generator=gen))
    seen = []  # the truncation argument of every generator call
    model.generator.register_forward_pre_hook(lambda module, args: seen.append(args[1]))
    a = BigGANAdapter(model, class_idx=3, truncation=0.4)
    with pytest.raises(ValueError, match=r"latent_sampler: truncation=0.8 differs from the adapter's 0.4.*"
                                         r"with_truncation\(0.8\)"):
        a.latent_sampler(truncation=0.8)
    with pytest.raises(ValueError, match=r"sample_latents: truncation=0.8 differs"):
        a.sample_latents(2, truncation=0.8)
    z4 = a.sample_latents(2, truncation=0.4)  # the adapter's own value is accepted
    a.render(z4, progress=False)
    assert seen == [0.4]
    b = a.with_truncation(0.8)
    assert b.model is model and (b.class_idx, b.latent, b.truncation) == (3, "z", 0.8)
    z = b.latent_sampler(truncation=0.8)(6, torch.Generator().manual_seed(0))
    assert 2 * 0.4 < z.abs().max() <= 2 * 0.8  # drawn with 0.8
    seen.clear()
    images = b.render(z, progress=False)
    assert seen == [0.8]
    with torch.no_grad():
        want = model(z, F.one_hot(torch.full((6,), 3), 10).float(), 0.8)
    torch.testing.assert_close(images, want.clamp(-1, 1))
    assert not torch.allclose(images, a.render(z, progress=False))  # the value changes the images
    seen.clear()
    zc = BigGANAdapter(model, class_idx=3, latent="z+class", truncation=0.8).sample_latents(2)
    BigGANAdapter(model, class_idx=3, latent="z+class", truncation=0.8).render(zc, progress=False)
    assert seen == [0.8]
    with pytest.raises(ValueError, match=r"truncation must be a number in \(0, 1\], got 1.5"):
        a.with_truncation(1.5)


def test_rosinality_parameter_of_the_wrong_shape_is_named(tmp_path):
    g = tiny_generator()
    state = g.state_dict()
    state["to_rgb1.bias"] = torch.zeros(1, 12, 1, 1)
    path = tmp_path / "wrong_shape.pt"
    torch.save({"g_ema": state, "latent_avg": g.w_avg}, path)
    with pytest.raises(ValueError, match=re.escape(f"load_rosinality: {path}: parameter to_rgb1.bias has shape "
                                                   "(1, 12, 1, 1), but a StyleGAN2 generator of size 32 with these "
                                                   "channel counts needs (1, 3, 1, 1)")):
        load_rosinality(path)
    torch.save({"g_ema": g.state_dict(), "latent_avg": torch.zeros(7)}, path)
    with pytest.raises(ValueError, match=r"latent_avg has shape \(7,\), but the generator's W has width 32"):
        load_rosinality(path)


@pytest.mark.parametrize("trust_pickle", [False, True])
def test_files_that_are_not_pytorch_checkpoints(tmp_path, trust_pickle):
    g = tiny_generator()
    cases = {"garbage.pt": bytes(range(256)) * 4, "pickle_bytes.pt": b"\x80\x04garbage follows" * 8,
             "empty.pt": b"",
             "plain_pickle.pt": pickle.dumps({"g_ema": {k: v.numpy() for k, v in g.state_dict().items()}})}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("readme.txt", "not a checkpoint")
    for name in [*cases, "other.zip"]:
        path = tmp_path / name
        with pytest.raises(ValueError, match=re.escape(f"load_rosinality: {path} is not a PyTorch checkpoint")):
            load_rosinality(path, trust_pickle=trust_pickle)
    # both formats torch.save writes are accepted
    save_rosinality(g, tmp_path / "zip.pt")
    torch.save({"g_ema": g.state_dict(), "latent_avg": g.w_avg}, tmp_path / "legacy.pt",
               _use_new_zipfile_serialization=False)
    for name in ("zip.pt", "legacy.pt"):
        torch.testing.assert_close(load_rosinality(tmp_path / name, trust_pickle=trust_pickle).G.w_avg, g.w_avg)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_segment_points_keep_curve_precision_for_low_precision_codebooks(dtype):
    """bfloat16 has a spacing of 2 above 256: a coordinate 300.25 cast to it is 300."""
    c = torch.randn(512, 8, generator=torch.Generator().manual_seed(0)).to(dtype)
    pts = GeneratorAdapter.segment_points(c, 300, 5)
    assert pts.dtype == torch.float32 and pts.shape == (5, 8)
    assert len({tuple(p) for p in pts.tolist()}) == 5
    ends = c[300:302].double()  # the vertices as stored, in float64
    oracle = torch.stack([(1 - t) * ends[0] + t * ends[1] for t in (0.0, 0.25, 0.5, 0.75, 1.0)])
    torch.testing.assert_close(pts.double(), oracle, rtol=1e-6, atol=1e-7)
    assert torch.equal(pts[0], c[300].float()) and torch.equal(pts[-1], c[301].float())
    assert GeneratorAdapter.segment_points(c.double(), 300, 3).dtype == torch.float64
    with pytest.raises(TypeError, match=r"codebook must be a floating-point \(K, D\) tensor"):
        GeneratorAdapter.segment_points(torch.zeros(4, 2, dtype=torch.int64), 0, 2)
    with pytest.raises(ValueError, match="n must be a positive int, got 0"):
        GeneratorAdapter.segment_points(c, 0, 0)


def test_apply_direction_promotes_low_precision_latents():
    a = StyleGAN2Adapter(tiny_generator())
    w = a.sample_latents(2).bfloat16() + 300  # bfloat16 spacing is 2 here
    d = torch.zeros(32)
    d[0] = 1.0
    moved = a.apply_direction(w, d, 0.5)
    assert moved.dtype == torch.float32
    torch.testing.assert_close(moved[:, 0] - w[:, 0].float(), torch.full((2,), 0.5))
