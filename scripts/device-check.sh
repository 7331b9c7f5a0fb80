#!/usr/bin/env bash
# The checks that need a GPU, in one command (about 8 minutes on one H200):
#   1. the cuda-marked tests (tests/test_cuda.py): every method trains, resumes, evaluates and exports on CUDA, runs
#      move between CUDA and the CPU, the Triton LIF matches the CPU kernels, compiled bf16 training neither
#      recompiles nor loses exactness, the density invariants hold;
#   2. the GPU benchmark (bench/gpu_throughput.py): ResNet19 (CIFAR-10 shape, batch 64, T = 4) in bf16 and fp32
#      against SpikingJelly 2.0 and the ReLU floor, the neuron alone, then convnet and VGGSNN.
# Usage (from anywhere; runs in the repository root):
#   scripts/device-check.sh OUT_DIR            everything; logs and JSON go to OUT_DIR
#   scripts/device-check.sh OUT_DIR --smoke    the tests and one short compiled ResNet19 (about 3 minutes)
# PYTHON picks the interpreter (default .venv/bin/python when it exists, else python3); the project must be importable
# (installed, or PYTHONPATH=.) with pytest, and SpikingJelly 2.0 for the peer columns. Without CUDA it stops with 2.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/device-check.sh OUT_DIR [--smoke]}
mode=${2:-full}
mkdir -p "$out"
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONUNBUFFERED=1
if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "device-check: no CUDA device here (torch.cuda.is_available() is False); nothing to check" >&2
    exit 2
fi
start=$(date +%s)
failed=0
stage() {  # stage NAME TIMEOUT_S COMMAND...: run one stage with a time limit, its output to OUT_DIR/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit} s, at $(( $(date +%s) - start )) s)"
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
    local rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || { echo "device-check: $name exited with $rc" >&2; failed=1; }
}
"$PYTHON" - >"$out/machine.txt" 2>&1 <<'EOF'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))
try:
    import triton
    print("triton", triton.__version__)
except ImportError:
    print("triton missing: the fused LIF falls back to the plain torch loop on CUDA")
EOF
cat "$out/machine.txt"
# SPARSESNN_NO_COMPILE=cpu: the tests' CPU side (runs moved to the CPU) uses the plain loops, not minutes of C++ builds
stage cuda-tests 120 env SPARSESNN_NO_COMPILE=cpu "$PYTHON" -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py \
    -rs --durations=12
bench=("$PYTHON" bench/gpu_throughput.py)
if [ "$mode" = "--smoke" ]; then
    stage bench-smoke 120 "${bench[@]}" --nets resnet19 --precisions bf16 --rounds 2 --steps 3 \
        --variants sparsesnn-eager,sparsesnn-compile-cl,spikingjelly-eager --json "$out/bench-smoke.json"
else
    # the issue's targets: bf16 default recipe vs SpikingJelly's best path (Triton + compile), ESL 10 % vs dense
    stage bench-resnet19-bf16 240 "${bench[@]}" --nets resnet19 --precisions bf16 \
        --variants sparsesnn-compile-cl,sparsesnn-esl10-compile-cl,spikingjelly-compile,sparsesnn-compile,sparsesnn-eager,spikingjelly-eager,relu-eager \
        --json "$out/bench-resnet19-bf16.json"
    # fp32: the default recipe vs SpikingJelly's eager step
    stage bench-resnet19-fp32 100 "${bench[@]}" --nets resnet19 --precisions fp32 --no-lif \
        --variants sparsesnn-compile-cl,sparsesnn-eager,spikingjelly-eager,relu-eager --json "$out/bench-resnet19-fp32.json"
    stage bench-convnet-vggsnn 60 "${bench[@]}" --nets convnet,vggsnn --precisions bf16,fp32 --no-lif --rounds 3 \
        --variants sparsesnn-eager,spikingjelly-eager,relu-eager --json "$out/bench-convnet-vggsnn.json"
fi
echo "device-check: done in $(( $(date +%s) - start )) s; logs and JSON in $out"
exit "$failed"
