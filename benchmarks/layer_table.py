"""The quantizer layer's forward + backward against vector-quantize-pytorch's
VectorQuantize, in one run, on the CPU; writes benchmarks/results/cpu_layer.md.

    python benchmarks/layer_table.py                      # batch 4096, D = 256, K = 1024, 2 threads
    python benchmarks/layer_table.py --rounds 5 --quick   # a smoke run, no file written

One step = forward of a (batch, D) float32 input that requires grad, then backward of
``out.square().mean() + loss`` (gradients to the input and, where the layer learns its
codebook by gradient, to the codebook). No optimizer step. Contenders, timed in
interleaved rounds (each round times every contender once; the table gives medians):
  SFVQ nsvq (train)            SFVQ(gradient="nsvq"): dithered search + noise substitution
  SFVQ straight-through (train)
  SFVQ exact (eval)            the exact nearest point on the curve, its backward
  VectorQuantize (train)       the library's defaults: EMA codebook update inside forward
  VectorQuantize learnable     learnable_codebook=True, ema_update=False: a codebook
                               trained by gradient, as SFVQ's
  torch.mm                     the (batch, D) x (D, K) product alone: the floor of any
                               exact nearest-code search
Both quantizers start from the same K data rows as codebook (SFVQ reads them as a curve).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import sfvq_ext

RESULTS = Path(__file__).with_name("results")


def contenders(D: int, K: int, start: torch.Tensor) -> dict:
    from vector_quantize_pytorch import VectorQuantize

    def sfvq(gradient: str, training: bool):
        m = sfvq_ext.SFVQ(D, K.bit_length() - 1, gradient=gradient, start_bits=K.bit_length() - 1)
        m.set_codebook(start)
        return m.train(training)

    def vq(**kwargs):
        m = VectorQuantize(dim=D, codebook_size=K, **kwargs)
        with torch.no_grad():
            m.codebook = start.clone()
        return m.train()

    return {
        "SFVQ nsvq (train)": sfvq("nsvq", True),
        "SFVQ straight-through (train)": sfvq("straight_through", True),
        "SFVQ exact (eval)": sfvq("nsvq", False),
        "VectorQuantize (train)": vq(),
        "VectorQuantize learnable (train)": vq(learnable_codebook=True, ema_update=False),
    }


def step(layer, x: torch.Tensor) -> None:
    for parameter in layer.parameters():
        parameter.grad = None
    x.grad = None
    out, _, loss = layer(x)
    (out.square().mean() + loss.sum()).backward()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--codebook-size", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=25)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="print only, write no file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    N, D, K = args.batch, args.dim, args.codebook_size
    data = torch.randn(N + K, D)
    x = data[:N].clone().requires_grad_()
    start = data[N:].clone()
    layers = contenders(D, K, start)
    for layer in layers.values():  # warm-up (first-call allocations, lazy init)
        for _ in range(2):
            step(layer, x)
    w = torch.randn(D, K)
    xd = x.detach()
    times = {name: [] for name in [*layers, "torch.mm"]}
    for _ in range(args.rounds):
        for name, layer in layers.items():
            t = time.perf_counter()
            step(layer, x)
            times[name].append(time.perf_counter() - t)
        t = time.perf_counter()
        torch.mm(xd, w)
        times["torch.mm"].append(time.perf_counter() - t)
    base = statistics.median(times["VectorQuantize (train)"])
    base_min = min(times["VectorQuantize (train)"])
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append(f"| {name} | {med * 1e3:.1f} | {min(ts) * 1e3:.1f} | {med / base:.2f}x | {min(ts) / base_min:.2f}x "
                    f"| {N / med:,.0f} |")
    command = "python benchmarks/layer_table.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    from importlib.metadata import version

    lines = [
        "# Quantizer layer: forward + backward on the CPU, SFVQ against VectorQuantize",
        "",
        f"- command: `{command}`",
        f"- machine: {platform.machine()}, threads: {args.threads}, torch {torch.__version__}, "
        f"vector-quantize-pytorch {version('vector-quantize-pytorch')}; date {datetime.date.today()}",
        f"- batch {N}, D = {D}, K = {K}, float32; one step = forward + backward of `out.square().mean() + loss`; "
        f"{args.rounds} interleaved rounds after 2 warm-up steps each; the machine is shared, so read the ratios",
        "",
        "| layer | median ms | min ms | median / VectorQuantize (train) | min / VectorQuantize (train) | vectors/s (median) |",
        "|---|---|---|---|---|---|",
        *rows,
    ]
    print("\n".join(lines))
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "cpu_layer.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
