"""Time the CUDA exact projection and nearest search against named baselines in
one run and write a markdown table (ratios matter; absolute times vary).

    python benchmarks/cuda_table.py                 # N in {1e5, 1e6, 1e7} x D in {128, 512} x K in {16, 256, 1024, 4096}
    python benchmarks/cuda_table.py --quick         # N = 1e6: (D, K) in {(512, 16), (128, 16), (512, 1024)}

Baselines, all float32 on the same device and data:
- `mm fp32` / `mm tf32`: torch.mm of x by codebook^T (cuBLAS) at the same shape, in row
  chunks of at most 1 GiB of output (the full N x K product does not fit at N = 1e7);
- `torch chunked`: the same math written in plain PyTorch (centre, GEMM, per-segment
  epilogue, argmin, gather and recompute of the winner) over row chunks;
- `authors`: the original authors' rule in PyTorch (an N x D x K tensor), timed on as
  many rows as fit in 1 GiB and scaled to N.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import subprocess
from pathlib import Path

import torch

import sfvq_ext
from sfvq_ext import reference
from sfvq_ext import _C_cuda as _C  # the CUDA kernels' module and its hooks

CHUNK_BYTES = 1 << 30
SMALL_K_MAX = 32  # the small-codebook kernel's limit (csrc/cuda/search_cuda.h)


def gpu_time_ms(fn, repeats: int) -> float:
    fn()  # warm-up (and any lazy initialisation)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def chunk_rows(n: int, width: int) -> int:
    """Rows per chunk so that a (rows, width) float32 temporary stays within 1 GiB."""
    return max(1, min(n, CHUNK_BYTES // (4 * width)))


def mm_chunked(x, ct, out):
    rows = out.shape[0]
    for s in range(0, x.shape[0], rows):
        e = min(s + rows, x.shape[0])
        torch.mm(x[s:e], ct, out=out[: e - s])


def torch_chunked_project(x, c):
    """Exact-projection math a user could write in plain PyTorch (float32)."""
    mean = c.mean(0)
    cc = c - mean
    d = cc[1:] - cc[:-1]
    a = (cc[:-1] * d).sum(1)
    b = d.square().sum(1)
    inv_b = torch.where(b > 0, 1 / b, torch.zeros_like(b))
    n = cc[:-1].square().sum(1)
    rows = chunk_rows(x.shape[0], max(c.shape))
    point = torch.empty_like(x)
    seg = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    for s in range(0, x.shape[0], rows):
        xc = x[s : s + rows] - mean
        g = xc @ cc.t()
        p = g[:, 1:] - g[:, :-1] - a
        t = (p * inv_b).clamp_(0, 1)
        score = n - 2 * g[:, :-1] - 2 * t * p + t * t * b
        i = score.argmin(1)
        ti = t.gather(1, i[:, None])
        point[s : s + rows] = c[i] + ti * (c[i + 1] - c[i])
        seg[s : s + rows] = i
    return point, seg


def nearest_chunked(x, c):
    rows = chunk_rows(x.shape[0], c.shape[0])
    n = c.square().sum(1)
    out = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    for s in range(0, x.shape[0], rows):
        out[s : s + rows] = (n - 2 * (x[s : s + rows] @ c.t())).argmin(1)
    return out


def copy_bandwidth_gbs() -> float:
    src = torch.randn(1 << 29, device="cuda")  # 2 GiB
    dst = torch.empty_like(src)
    ms = gpu_time_ms(lambda: dst.copy_(src), 10)
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9  # bytes read + written


def bench_shape(n: int, d: int, k: int, repeats: int) -> dict:
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(n, d, device="cuda", generator=gen)
    c = torch.randn(k, d, device="cuda", generator=gen)
    out = torch.empty(chunk_rows(n, k), k, device="cuda")
    ms = {}
    ms["sfvq project"] = gpu_time_ms(lambda: sfvq_ext.project(x, c), repeats)
    rows, brute = _C._cuda_last_search_stats()
    ms["sfvq nearest"] = gpu_time_ms(lambda: sfvq_ext.nearest(x, c), repeats)
    if k <= SMALL_K_MAX:  # the opt-in small-codebook kernel on the same data
        _C._cuda_small_k_kernel(True)
        try:
            ms["small-K project"] = gpu_time_ms(lambda: sfvq_ext.project(x, c), repeats)
            assert _C._cuda_last_search_kernel() == "small_k"
            ms["small-K nearest"] = gpu_time_ms(lambda: sfvq_ext.nearest(x, c), repeats)
        finally:
            _C._cuda_small_k_kernel(False)
    torch.backends.cuda.matmul.allow_tf32 = False
    ms["mm fp32"] = gpu_time_ms(lambda: mm_chunked(x, c.t(), out), repeats)
    torch.backends.cuda.matmul.allow_tf32 = True
    ms["mm tf32"] = gpu_time_ms(lambda: mm_chunked(x, c.t(), out), repeats)
    torch.backends.cuda.matmul.allow_tf32 = False
    ms["torch chunked"] = gpu_time_ms(lambda: torch_chunked_project(x, c), repeats)
    ms["nearest chunked"] = gpu_time_ms(lambda: nearest_chunked(x, c), repeats)
    n_auth = max(64, min(n, CHUNK_BYTES // (4 * d * k)))
    xa = x[:n_auth]
    ms["authors"] = gpu_time_ms(lambda: reference.authors_project(xa, c), max(1, repeats // 2)) * n / n_auth
    del out
    # Bytes the projection must move at least: read x, write point (+ 4 small outputs).
    moved = n * d * 4 * 2 + n * (8 + 4 * 3)
    return {"ms": ms, "brute": brute / rows, "moved_gbs": moved / (ms["sfvq project"] * 1e-3) / 1e9,
            "small_k_moved_gbs": moved / (ms["small-K project"] * 1e-3) / 1e9 if "small-K project" in ms else None}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n", type=float, nargs="*", default=[1e5, 1e6, 1e7])
    parser.add_argument("--d", type=int, nargs="*", default=[128, 512])
    parser.add_argument("--k", type=int, nargs="*", default=[16, 256, 1024, 4096])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "cuda_project.md"))
    args = parser.parse_args()
    if args.quick:
        shapes = [(10**6, 512, 16), (10**6, 128, 16), (10**6, 512, 1024)]
    else:
        shapes = [(int(n), d, k) for n in args.n for d in args.d for k in args.k]
    bw = copy_bandwidth_gbs()
    print(f"device-to-device copy: {bw:.0f} GB/s (read + write)", flush=True)
    results = []
    for n, d, k in shapes:
        r = bench_shape(n, d, k, args.repeats if n < 10**7 else 3)
        results.append((n, d, k, r))
        ms = r["ms"]
        print(f"N={n:.0e} D={d} K={k}: " + ", ".join(f"{name} {v:.3f} ms" for name, v in ms.items())
              + f", brute-forced rows {r['brute']:.4%}", flush=True)
        torch.cuda.empty_cache()
        write_table(results, bw, args)  # after every shape, so a cut-off run still leaves a table


def write_table(results, bw: float, args) -> None:
    props = torch.cuda.get_device_properties(0)
    driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                            capture_output=True, text=True).stdout.strip()
    names = list(dict.fromkeys(m for r in results for m in r[3]["ms"]))
    lines = [
        "# CUDA projection benchmark",
        "",
        f"- device: {props.name} ({props.multi_processor_count} SMs), driver {driver}, torch {torch.__version__} "
        f"(CUDA {torch.version.cuda})",
        f"- date: {datetime.date.today()}, float32, x ~ N(0, I), codebook ~ N(0, I); median of {args.repeats} runs "
        "(3 at N = 1e7) after a warm-up, CUDA events",
        f"- command: `python benchmarks/cuda_table.py{' --quick' if args.quick else ''}`",
        f"- device-to-device copy bandwidth (bytes read + written): {bw:.0f} GB/s",
        "- `mm fp32`/`mm tf32`: torch.mm at the same shape (cuBLAS); `torch chunked`: the same projection in plain "
        "PyTorch; `authors`: their N x D x K rule, on a subset scaled to N; `nearest chunked`: mm + argmin",
        "- `brute` = share of rows the fused kernel could not certify (finished by the float64 brute-force kernel)",
        "- `moved/copy` = (x read + point written) / time, as a share of the copy bandwidth",
        f"- `small-K`: the opt-in small-codebook kernel (`_C._cuda_small_k_kernel(True)`), timed where K <= {SMALL_K_MAX}",
        "",
        "| N | D | K | " + " | ".join(f"{n} (ms)" for n in names)
        + " | project / mm fp32 | project / mm tf32 | chunked / project | authors / project | nearest / chunked | brute"
        + " | moved/copy | small-K moved/copy |",
        "|---|---|---|" + "---|" * (len(names) + 8),
    ]
    for n, d, k, r in results:
        ms = r["ms"]
        p = ms["sfvq project"]
        small = f"{r['small_k_moved_gbs'] / bw:.0%}" if r["small_k_moved_gbs"] else "-"
        lines.append(
            f"| {n:.0e} | {d} | {k} | " + " | ".join(f"{ms[m]:.2f}" if m in ms else "-" for m in names)
            + f" | {p / ms['mm fp32']:.2f} | {p / ms['mm tf32']:.2f} | {ms['torch chunked'] / p:.1f}x"
            + f" | {ms['authors'] / p:.0f}x | {ms['sfvq nearest'] / ms['nearest chunked']:.2f}"
            + f" | {r['brute']:.3%} | {r['moved_gbs'] / bw:.0%} | {small} |")
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
