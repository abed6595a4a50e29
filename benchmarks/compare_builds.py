"""Compare two builds of sfvq_ext on project's time relative to torch.mm (the
ratio project_table.py reports), at D = 512, K = 1024, N = 65536, float32.

Each build is timed in its own process, the two alternating for several rounds
so that load on a shared machine falls on both alike; each process reports the
median of its project / torch.mm ratios. Used for the stable-ABI port (is the
GEMM through the stable dispatcher call, and the loop through torch's stable
parallel_for, as fast as before?).

    python benchmarks/compare_builds.py --build before=/path/to/old/site --build after=  [--rounds 5]

`--build name=PATH` puts PATH (a `pip install --target` folder) first on the
import path; an empty PATH is the sfvq_ext this interpreter imports.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import sys, json, statistics, time
path = sys.argv[1]
if path:
    # a folder installed with `pip install --target`: ahead of any editable install's finder
    sys.meta_path = [f for f in sys.meta_path if "ScikitBuild" not in type(f).__name__]
    sys.path.insert(0, path)
import torch, sfvq_ext
torch.manual_seed(0)
x, c = torch.randn(65536, 512), torch.randn(1024, 512)
ct = c.t()
sfvq_ext.project(x, c); torch.mm(x, ct)
ratios, project_ms, mm_ms = [], [], []
for _ in range(int(sys.argv[2])):
    t0 = time.perf_counter(); sfvq_ext.project(x, c); t1 = time.perf_counter()
    torch.mm(x, ct); t2 = time.perf_counter()
    ratios.append((t1 - t0) / (t2 - t1)); project_ms.append(1e3 * (t1 - t0)); mm_ms.append(1e3 * (t2 - t1))
print(json.dumps({"file": sfvq_ext.__file__, "ratio": statistics.median(ratios),
                  "project_ms": statistics.median(project_ms), "mm_ms": statistics.median(mm_ms)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--build", action="append", required=True, help="name=PATH (empty PATH: as installed)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per process")
    args = parser.parse_args()
    builds = [b.split("=", 1) for b in args.build]
    results = {name: [] for name, _ in builds}
    for r in range(args.rounds):
        for name, path in builds:
            out = subprocess.run([sys.executable, "-c", CHILD, path, str(args.repeats)], check=True,
                                 capture_output=True, text=True).stdout
            results[name].append(json.loads(out.strip().splitlines()[-1]))
            print(f"round {r + 1} {name}: {results[name][-1]}", flush=True)
    print("\n| build | project / torch.mm (median of rounds) | project (ms) | torch.mm (ms) | rounds |")
    print("|---|---|---|---|---|")
    for name, runs in results.items():
        ratio = statistics.median(run["ratio"] for run in runs)
        print(f"| {name} | {ratio:.3f} | {statistics.median(run['project_ms'] for run in runs):.1f} | "
              f"{statistics.median(run['mm_ms'] for run in runs):.1f} | {len(runs)} |")


if __name__ == "__main__":
    main()
