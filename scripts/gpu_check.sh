#!/usr/bin/env bash
# gpu_check.sh OUT_DIR: what only a GPU can tell, in one run of about 10 minutes, everything written into OUT_DIR.
#
#   scripts/gpu_check.sh /tmp/gpu_out          (PY=python of an environment with a CUDA build of torch)
#
# Steps, each with its own time limit so that one hang cannot eat the rest, each logged with its exit status in
# OUT_DIR/steps.log: the device and versions; the CUDA extension's build; nvcc -Xptxas -v (registers, stack and
# local memory per kernel); the emulated CUDA tests again (they must pass wherever the GPU ones do); `pytest -m
# gpu`; bench_kernels.py on cpu and cuda (with achieved GB/s); a 60 s SDF fit of the demo shape on the GPU; a
# 5-minute NeRF fit of lego_halfres (400 x 400; LEGO=path to another scene folder) with its test-view scores.
set -uo pipefail
OUT=${1:?usage: scripts/gpu_check.sh OUT_DIR}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
PY=${PY:-python}
LEGO=${LEGO:-../shared/data/nerf/lego_halfres}

step() {  # step NAME SECONDS COMMAND...: run, keep its output, log how it ended
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
    local rc=$?
    echo "$(date +%H:%M:%S) $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$OUT/steps.log"
}

step device 30 bash -c "nvidia-smi; $PY -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))'"
step build_cuda 300 $PY -c "
import torch
from fieldstudio import kernels
m = kernels.extension('cuda')
assert m is not None, kernels._failures
print('built', m, kernels.build_folder('cuda'))"
NV=$(command -v nvcc || true)
if [ -n "$NV" ]; then
    step ptxas 120 bash -c "for f in rbf grid; do $NV -std=c++17 -arch=sm_80 -Xptxas -v -c cuda/\${f}_kernels.cu -I cuda -o /dev/null; done"
fi
step emulated_tests 180 $PY -m pytest -q -p no:cacheprovider -m emulated_cuda tests/test_emulated_cuda.py
step gpu_tests 240 $PY -m pytest -q -p no:cacheprovider -m gpu
step bench_kernels 180 $PY scripts/bench_kernels.py --devices cpu cuda --repeat 20 --out "$OUT"
step sdf_fit 150 $PY -m fieldstudio.app.cli fit assets/trefoil.ply -o "$OUT/sdf_run" --time-budget 60 --overwrite
if [ -d "$LEGO" ]; then
    step nerf_lego 420 $PY -m fieldstudio.app.cli fit "$LEGO" -o "$OUT/lego_run" --time-budget 300 --overwrite
fi
echo "results in $OUT (steps.log first)"
