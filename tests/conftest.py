import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture(scope="module")
def tiny_stylegan2():
    """A tiny random StyleGAN2 (16 px, 16-d W, 6 W+ layers) behind its adapter."""
    from sfvq_ext.adapters import StyleGAN2Adapter, StyleGAN2Generator

    torch.manual_seed(0)
    g = StyleGAN2Generator(16, style_dim=16, n_mlp=2, channels={4: 8, 8: 8, 16: 8})
    g.set_w_avg()
    return StyleGAN2Adapter(g)


@pytest.fixture
def no_network(monkeypatch):
    """Fails the test if anything opens a network connection (adapters load local files only)."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# Hypothesis profiles (tests/test_properties.py). "ci", the default, keeps the suite
# fast and repeatable; "long" searches far more widely:
#   HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest tests/test_properties.py -q
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", max_examples=30, deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=3000, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
