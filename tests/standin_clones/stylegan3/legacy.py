"""Stand-in for stylegan3 legacy.py (test helper): reads this repository's
network pickles (G, D and G_ema required, as the real one asserts)."""

import pickle

import torch


def load_network_pkl(f, force_fp16=False):
    data = pickle.Unpickler(f).load()
    assert isinstance(data["G"], torch.nn.Module)
    assert isinstance(data["D"], torch.nn.Module)
    assert isinstance(data["G_ema"], torch.nn.Module)
    return data
