#!/usr/bin/env bash
# Set up .venv with the dev extra (pytest, hypothesis, ruff, peers) and run the linter and the test suite.
# Extra arguments go to pytest, e.g. ./test.sh -k neurons
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup-env.sh dev
.venv/bin/ruff check sparsesnn tests bench examples
.venv/bin/ruff format --check sparsesnn tests bench examples
exec .venv/bin/python -m pytest -q "$@"
