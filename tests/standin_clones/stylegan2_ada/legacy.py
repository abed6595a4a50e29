"""Stand-in for stylegan2-ada-pytorch legacy.py (test helper, written for these
tests): ``load_network_pkl`` reads this repository's pickles and converts
TensorFlow-era ones (a tuple of three ``dnnlib.tflib.network.Network`` objects,
G, D and Gs) into this repository's networks, without TensorFlow."""

import pickle
import re

import dnnlib
import numpy as np
import torch


class _TFNetworkStub(dnnlib.EasyDict):
    pass


class _LegacyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "dnnlib.tflib.network" and name == "Network":
            return _TFNetworkStub
        return super().find_class(module, name)


def load_network_pkl(f, force_fp16=False):
    data = _LegacyUnpickler(f).load()
    if isinstance(data, tuple) and len(data) == 3 and all(isinstance(net, _TFNetworkStub) for net in data):
        tf_G, tf_D, tf_Gs = data
        data = dict(G=convert_tf_generator(tf_G), D=convert_tf_discriminator(tf_D), G_ema=convert_tf_generator(tf_Gs))
    assert isinstance(data["G"], torch.nn.Module)
    assert isinstance(data["D"], torch.nn.Module)
    assert isinstance(data["G_ema"], torch.nn.Module)
    return data


def _collect_tf_params(tf_net):
    params = {}

    def recurse(prefix, net):
        for name, value in net.variables:
            params[prefix + name] = value
        for name, component in net.components.items():
            recurse(prefix + name + "/", component)
    recurse("", tf_net)
    return params


def _populate(module, params, rules):
    """Copy each parameter/buffer of ``module`` from the TF variable its name maps to."""
    for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
        for pattern, value_fn in rules:
            match = re.fullmatch(pattern, name)
            if match:
                with torch.no_grad():
                    tensor.copy_(torch.from_numpy(np.array(value_fn(*match.groups()))))
                break
        else:
            raise ValueError(f"no TensorFlow variable for {name}")


def convert_tf_generator(tf_G):
    if tf_G.version < 4:
        raise ValueError("TensorFlow pickle version too low")
    kw = tf_G.static_kwargs
    from training import networks
    G = networks.Generator(z_dim=kw["latent_size"], c_dim=kw.get("label_size", 0), w_dim=kw["dlatent_size"],
                           img_resolution=kw["resolution"], img_channels=kw.get("num_channels", 3),
                           mapping_kwargs=dict(num_layers=kw.get("mapping_layers", 8)),
                           synthesis_kwargs=dict(channels=kw["fmaps"]))
    p = _collect_tf_params(tf_G)
    _populate(G, p, [
        (r"mapping\.w_avg", lambda: p["dlatent_avg"]),
        (r"mapping\.embed\.weight", lambda: p["mapping/LabelEmbed/weight"].T),
        (r"mapping\.embed\.bias", lambda: p["mapping/LabelEmbed/bias"]),
        (r"mapping\.fc(\d+)\.weight", lambda i: p[f"mapping/Dense{i}/weight"].T),
        (r"mapping\.fc(\d+)\.bias", lambda i: p[f"mapping/Dense{i}/bias"]),
        (r"synthesis\.const", lambda: p["synthesis/4x4/Const/const"][0]),
        (r"synthesis\.layers\.(\d+)\.affine\.weight", lambda i: p[f"synthesis/Layer{i}/mod_weight"].T),
        (r"synthesis\.layers\.(\d+)\.affine\.bias", lambda i: p[f"synthesis/Layer{i}/mod_bias"] + 1),
        (r"synthesis\.layers\.(\d+)\.weight", lambda i: p[f"synthesis/Layer{i}/weight"].transpose(3, 2, 0, 1)),
        (r"synthesis\.layers\.(\d+)\.bias", lambda i: p[f"synthesis/Layer{i}/bias"]),
        (r"synthesis\.layers\.(\d+)\.noise_strength", lambda i: p[f"synthesis/Layer{i}/noise_strength"]),
        (r"synthesis\.layers\.(\d+)\.noise_const", lambda i: p[f"synthesis/noise{i}"][0, 0]),
        (r"synthesis\.torgb\.weight", lambda: p["synthesis/ToRGB/mod_weight"].T),
        (r"synthesis\.torgb\.bias", lambda: p["synthesis/ToRGB/mod_bias"] + 1),
        (r"synthesis\.torgb_weight", lambda: p["synthesis/ToRGB/weight"].transpose(3, 2, 0, 1)),
    ])
    return G.eval().requires_grad_(False)


def convert_tf_discriminator(tf_D):
    kw = tf_D.static_kwargs
    from training import networks
    D = networks.Discriminator(c_dim=kw.get("label_size", 0), img_resolution=kw["resolution"],
                               img_channels=kw.get("num_channels", 3))
    p = _collect_tf_params(tf_D)
    _populate(D, p, [(r"out\.weight", lambda: p["Output/weight"].T), (r"out\.bias", lambda: p["Output/bias"])])
    return D.eval().requires_grad_(False)
