"""Did a change slow the projection down? Time `project` against `torch.mm` of the same
shape (by default that of `project_table.py --quick`: N = 65536, D = 512, K = 1024) in
two installed builds, alternating between them round by round, so both see the same
machine load; report each build's ratio to `torch.mm` measured in its own process.

    python benchmarks/compare_builds.py --baseline /path/to/old-venv/bin/python \\
        --candidate .venv/bin/python --rounds 5 --out benchmarks/results/cpu_project_builds.md

Each interpreter must import its own build of sfvq_ext (a venv with that build installed).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
from pathlib import Path

MEASURE = r"""
import json, statistics, time, torch, sfvq_ext
torch.set_num_threads(2)
g = torch.Generator().manual_seed(0)
x = torch.randn(65536, DIM, generator=g)
c = torch.randn(SIZE, DIM, generator=g)
ct = c.t()
def t(fn):
    fn()
    start = time.perf_counter(); fn(); return time.perf_counter() - start
project, mm = [], []
for _ in range(REPEATS):  # interleaved, so both see the same load
    project.append(t(lambda: sfvq_ext.project(x, c)))
    mm.append(t(lambda: torch.mm(x, ct)))
print(json.dumps({"project": statistics.median(project), "mm": statistics.median(mm),
                  "sfvq_ext": sfvq_ext.__file__, "torch": torch.__version__}))
"""


def measure(python: str, repeats: int, d: int, k: int) -> dict:
    # run outside the repository, so each interpreter imports its own installed build
    out = subprocess.run([os.path.abspath(python), "-c", MEASURE.replace("REPEATS", str(repeats)).replace("DIM", str(d)).replace("SIZE", str(k))], check=True,
                         capture_output=True, text=True, cwd="/")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="python of the venv holding the previous build")
    parser.add_argument("--candidate", required=True, help="python of the venv holding the new build")
    parser.add_argument("--baseline-name", default="previous build")
    parser.add_argument("--candidate-name", default="this build")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--d", type=int, default=512, help="vector width D")
    parser.add_argument("--k", type=int, default=1024, help="codebook size K")
    parser.add_argument("--out", default=None, help="markdown file to write (appended to if it exists)")
    args = parser.parse_args()

    builds = {args.baseline_name: args.baseline, args.candidate_name: args.candidate}
    ratios = {name: [] for name in builds}
    info = {}
    for r in range(args.rounds):
        for name, python in builds.items():
            m = measure(python, args.repeats, args.d, args.k)
            ratios[name].append(m["project"] / m["mm"])
            info[name] = m
            print(f"round {r + 1}: {name}: project {m['project'] * 1e3:.1f} ms, mm {m['mm'] * 1e3:.1f} ms, "
                  f"ratio {ratios[name][-1]:.3f}", flush=True)
    base = statistics.median(ratios[args.baseline_name])
    cand = statistics.median(ratios[args.candidate_name])
    lines = [
        "# Projection speed of two builds (ratio to torch.mm, same machine, alternating rounds)",
        "",
        f"- date: {datetime.date.today()}, torch {info[args.candidate_name]['torch']}, 2 threads",
        f"- shape: N = 65536, D = {args.d}, K = {args.k}, float32",
        f"- command: `python benchmarks/compare_builds.py --d {args.d} --k {args.k} --rounds {args.rounds} "
        f"--repeats {args.repeats} --baseline ... --candidate ...`",
        f"- each round times both builds in their own process; each ratio is the median of {args.repeats} "
        "interleaved project / torch.mm timings",
        "",
        "| build | ratio project / torch.mm per round | median |",
        "|---|---|---|",
    ]
    for name in builds:
        lines.append(f"| {name} | {', '.join(f'{v:.3f}' for v in ratios[name])} | {statistics.median(ratios[name]):.3f} |")
    lines += ["", f"Change of the median ratio: {100 * (cand / base - 1):+.1f}%", ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        out = Path(args.out)
        out.write_text((out.read_text() + "\n" if out.exists() else "") + text)


if __name__ == "__main__":
    main()
