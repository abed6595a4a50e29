#!/usr/bin/env bash
# Everything a lent GPU machine should run in one call: build the extension from
# source against the machine's own torch, run the whole test suite (CUDA tests
# included), compute-sanitizer memcheck and racecheck on small inputs that reach
# every kernel path, the CUDA training-step table and the CUDA projection table. Logs go to $OUT (or ./gpu-out).
#   bash benchmarks/gpu_check.sh [--quick|--full|--no-bench|--bench-quick|--bench-full]
# --no-bench: build, tests and sanitizer only; --bench-*: build and benchmarks only (a device
# call is limited to 10 minutes, so a first call can check and a second one measure).
set -uo pipefail
MODE=${1:---quick}
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 SFVQ_CUDA=ON TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} CMAKE_BUILD_PARALLEL_LEVEL=16
PY=${PYTHON:-python3}
# The lent machines export CXX=/opt/gcc/bin/g++, a GCC that links libstdc++
# statically: the module then carries a second libstdc++ beside torch's, and
# formatting any number into an error message segfaults. The system g++ links it
# dynamically, as torch does.
if [ -x /usr/bin/g++ ]; then export CXX=/usr/bin/g++ CUDAHOSTCXX=/usr/bin/g++ CC=/usr/bin/gcc; fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/device.txt"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/device.txt"
$PY -m pip install --no-build-isolation --no-deps -Cbuild-dir=build/gpu-$(basename "${CXX:-cc}") -v -e . > "$OUT/build.log" 2>&1 \
  || { tail -40 "$OUT/build.log"; exit 1; }
echo "build ok ($(grep -o 'torch [^ ]* (C++[0-9]*)' "$OUT/build.log" | head -1))"
readelf -d build/gpu-$(basename "${CXX:-cc}")/_C*.so | grep -q 'libstdc++' || echo "WARNING: _C links libstdc++ statically; error messages will crash"
if [[ "$MODE" != --bench-* ]]; then
  timeout 300 $PY -m pytest tests -q -rfE -p no:cacheprovider 2>&1 | tee "$OUT/tests.log" | tail -25
  for tool in memcheck racecheck; do
    timeout 90 compute-sanitizer --tool $tool --error-exitcode 3 $PY tests/cuda_sanitizer_inputs.py > "$OUT/$tool.log" 2>&1
    echo "compute-sanitizer $tool: exit $? ($(grep -c 'ERROR SUMMARY: 0 errors\|RACECHECK SUMMARY: 0 hazards' "$OUT/$tool.log") clean summaries)"
    tail -3 "$OUT/$tool.log"
  done
fi
if [ "$MODE" != "--no-bench" ]; then
  timeout 150 $PY benchmarks/train_step_table.py --device cuda --out "$OUT/cuda_train_step.md" > "$OUT/train_step.log" 2>&1
  echo "training-step benchmark exit $?"; tail -8 "$OUT/cuda_train_step.md"
fi
case "${MODE#--bench}" in
  -quick|--quick) timeout 240 $PY benchmarks/cuda_table.py --quick --out "$OUT/cuda_project.md" > "$OUT/bench.log" 2>&1
           echo "benchmark exit $?"; tail -5 "$OUT/cuda_project.md" ;;
  -full|--full) timeout 330 $PY benchmarks/cuda_table.py --out "$OUT/cuda_project.md" > "$OUT/bench.log" 2>&1
          echo "benchmark exit $?"; tail -30 "$OUT/cuda_project.md" ;;
esac
