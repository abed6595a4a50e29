"""Writes stand-in NVlabs pickles and their oracles; run in a fresh process (test helper).

    python make_pickles.py network CLONE MODULE KWARGS_JSON C_DIM OUT_DIR
        with CLONE's code only: a G / D / G_ema pickle of MODULE.Generator(**KWARGS)
        (OUT_DIR/network.pkl), then its oracle (OUT_DIR/oracle.pt, see below)
    python make_pickles.py oracle CLONE PKL OUT_PT
        with CLONE's code only: load PKL with the clone's legacy.load_network_pkl and
        save z, c, ws = G_ema.mapping(z, c, truncation_psi=0.7), the images
        G_ema.synthesis(ws, noise_mode="const", force_fp32=True) and w_avg (on one thread)
    python make_pickles.py tf-era OUT_DIR
        with the TensorFlow-era stand-in code: a (G, D, Gs) tuple of
        dnnlib.tflib.network.Network (OUT_DIR/tf.pkl) and its variables (OUT_DIR/tf_vars.npz)
"""

import json
import pickle
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRUNCATION = 0.7


def network(clone, module_name, kwargs, c_dim, out_dir):
    sys.path.insert(0, clone)
    import importlib

    import torch
    module = importlib.import_module(module_name)
    torch.manual_seed(0)
    G = module.Generator(c_dim=c_dim, **kwargs)
    G_ema = module.Generator(c_dim=c_dim, **kwargs)  # a different draw: the loader must pick G_ema
    with torch.no_grad():
        G_ema.mapping.w_avg.copy_(torch.randn_like(G_ema.mapping.w_avg))
    D = module.Discriminator(c_dim=c_dim, img_resolution=kwargs["img_resolution"], img_channels=kwargs["img_channels"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "network.pkl", "wb") as f:
        pickle.dump(dict(G=G, D=D, G_ema=G_ema, augment_pipe=None, training_set_kwargs=None), f)
    oracle(clone, out / "network.pkl", out / "oracle.pt")


def oracle(clone, pkl, out_pt):
    if clone not in sys.path:
        sys.path.insert(0, clone)
    import legacy
    import torch
    torch.set_num_threads(1)  # as test_nvlabs maps: W is then computed identically in both processes
    with open(pkl, "rb") as f:
        G = legacy.load_network_pkl(f)["G_ema"]
    gen = torch.Generator().manual_seed(123)
    z = torch.randn(3, G.z_dim, generator=gen)
    c = torch.nn.functional.one_hot(torch.full((3,), 1), G.c_dim).float() if G.c_dim else None
    with torch.no_grad():
        ws = G.mapping(z, c, truncation_psi=TRUNCATION)
        images = G.synthesis(ws, noise_mode="const", force_fp32=True)
    torch.save(dict(z=z, c=c, ws=ws, images=images, w_avg=G.mapping.w_avg.clone(), truncation=TRUNCATION), out_pt)


def tf_era(out_dir):
    sys.path.insert(0, str(HERE / "tf_era"))
    import numpy as np
    from dnnlib.tflib.network import Network

    rng = np.random.default_rng(0)
    z_dim, w_dim, C, res, layers = 6, 5, 4, 8, 2  # resolutions 4 and 8: two synthesis layers

    def r(*shape, scale=0.3):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def generator(name):
        mapping = Network("G_mapping", {}, [(f"Dense{i}/{kind}", r(*shape)) for i in range(2)
                                            for kind, shape in (("weight", (z_dim if i == 0 else w_dim, w_dim)),
                                                                ("bias", (w_dim,)))])
        synthesis_vars = [("4x4/Const/const", r(1, C, 4, 4)), ("ToRGB/mod_weight", r(w_dim, C)),
                          ("ToRGB/mod_bias", r(C)), ("ToRGB/weight", r(1, 1, C, 3, scale=3.0))]
        for i in range(layers):
            size = 4 * 2 ** i
            synthesis_vars += [(f"Layer{i}/mod_weight", r(w_dim, C)), (f"Layer{i}/mod_bias", r(C)),
                               (f"Layer{i}/weight", r(3, 3, C, C)), (f"Layer{i}/bias", r(C)),
                               (f"Layer{i}/noise_strength", np.float32(0.3)), (f"noise{i}", r(1, 1, size, size))]
        synthesis = Network("G_synthesis", {}, synthesis_vars)
        kwargs = dict(latent_size=z_dim, dlatent_size=w_dim, resolution=res, num_channels=3, mapping_layers=2,
                      label_size=0, fmaps=C)
        return Network(name, kwargs, [("dlatent_avg", r(w_dim))], dict(mapping=mapping, synthesis=synthesis))

    D = Network("D", dict(resolution=res, num_channels=3, label_size=0),
                [("Output/weight", r(3 * res * res, 1)), ("Output/bias", r(1))])
    G, Gs = generator("G"), generator("Gs")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "tf.pkl", "wb") as f:
        pickle.dump((G, D, Gs), f, protocol=pickle.HIGHEST_PROTOCOL)

    def flat(net, prefix=""):
        values = {prefix + k: v for k, v in net.variables}
        for name, comp in net.components.items():
            values.update(flat(comp, prefix + name + "/"))
        return values
    np.savez(out / "tf_vars.npz", **{k.replace("/", "|"): v for k, v in flat(Gs).items()})


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "network":
        network(args[0], args[1], json.loads(args[2]), int(args[3]), args[4])
    elif mode == "oracle":
        oracle(*args)
    elif mode == "tf-era":
        tf_era(args[0])
    else:
        raise SystemExit(f"unknown mode {mode}")
