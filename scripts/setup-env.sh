#!/usr/bin/env bash
# Create (or reuse) the virtual environment .venv and install sparsesnn into it.
#   scripts/setup-env.sh          the package and its runtime dependencies
#   scripts/setup-env.sh dev      plus the dev extra: pytest, hypothesis, ruff and the peer libraries
#   scripts/setup-env.sh dev triton   plus the triton extra (what CI runs: tests/test_triton_interpreter.py runs the
#                                     Triton kernels on the CPU); triton depends on no torch, and the script fails if
#                                     installing it changed the torch build
# torch is installed first and pinned to the CPU build that ships on this kind of machine (TORCH_SPEC), so that
# nothing later pulls a multi-GB CUDA build. A CUDA user installs their torch build into .venv first (see README);
# the script keeps a torch that is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
PY=.venv/bin/python
pip_install() { "$PY" -m pip install --quiet --disable-pip-version-check "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
if ! "$PY" -c "import torch" 2>/dev/null; then
    pip_install $TORCH_SPEC
fi
"$PY" -c "import torch" || { echo "setup-env: torch failed to install ($TORCH_SPEC)" >&2; exit 1; }
torch_before=$("$PY" -c "import torch; print(torch.__version__)")
if [ "${1:-}" = "dev" ]; then
    if [ "${2:-}" = "triton" ]; then
        pip_install -e ".[dev,triton]"
        "$PY" -c "import triton" || { echo "setup-env: triton failed to install" >&2; exit 1; }
    else
        pip_install -e ".[dev]"
    fi
    # peers whose own pins would pull another torch: installed without their dependencies (see PERF-NOTES)
    pip_install --no-deps "spikingjelly==2.0.0" "tonic==1.7.0"
else
    pip_install -e .
fi
torch_after=$("$PY" -c "import torch; print(torch.__version__)")
if [ "$torch_before" != "$torch_after" ]; then
    echo "setup-env: installing the extras replaced torch $torch_before with $torch_after" >&2
    exit 1
fi
"$PY" -c "import sparsesnn, torch; print(f'sparsesnn {sparsesnn.__version__} with torch {torch.__version__} in .venv')"
