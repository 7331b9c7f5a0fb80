#!/usr/bin/env bash
# Quick start: set up .venv and train a sparse SNN (RigL, 20 % of connections) on the embedded digits data set.
# Extra arguments go to `sparsesnn train`, e.g. ./run.sh --set sparse.density=0.1
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup-env.sh
exec .venv/bin/sparsesnn train --config configs/digits_quickstart.toml --run-dir "runs/quickstart-$(date +%Y%m%d-%H%M%S)" "$@"
