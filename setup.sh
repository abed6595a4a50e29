#!/usr/bin/env bash
# Set up sfvq_ext from a fresh clone and run the main job on what it ships:
#   creates .venv, installs torch and the build tools, builds the extension from
#   source (editable install, with the test, benchmark, BigGAN and docs extras),
#   runs `sfvq check`, then `sfvq demo`: SFVQ fitted on
#   the shipped shape-world StyleGAN2, reported in sfvq-demo/index.html.
# Environment:
#   SFVQ_TORCH   torch requirement to install (default: torch==2.13.0, a CPU build)
#   SFVQ_CUDA    AUTO | ON | OFF: build the CUDA kernels (AUTO: when torch is a CUDA build)
#   SFVQ_VENV    where to create the virtual environment (default: .venv)
set -euo pipefail
cd "$(dirname "$0")"
venv="${SFVQ_VENV:-.venv}"
torch_req="${SFVQ_TORCH:-torch==2.13.0}"

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
py="$venv/bin/python"
"$py" -m pip install --quiet --upgrade pip
# torch first: the extension is compiled against the torch that is installed.
"$py" -m pip install --quiet "$torch_req"
"$py" -m pip install --quiet "scikit-build-core>=0.10" "pybind11>=2.12" ninja "cmake>=3.26"
# No build isolation: compile against the torch just installed (an isolated build
# works too, the extension is on the stable ABI, but fetches a torch to compile against).
"$py" -m pip install --quiet --no-build-isolation -e ".[test,bench,biggan,docs]"
# The browser tests drive Debian's chromium (no browser download): install it when missing.
if ! command -v chromium > /dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium > /dev/null
  else
    echo "setup.sh: chromium is not installed; the browser test needs it (sudo apt-get install chromium)" >&2
  fi
fi
"$venv/bin/sfvq" check
"$venv/bin/sfvq" demo --out sfvq-demo
