#!/usr/bin/env bash
# The long benchmark runs behind BENCHMARKS.md, one after another (each table reuses finished rows when re-run).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
mkdir -p bench/out
$PY bench/method_table.py --table mnist-esl --epochs 5 --json bench/out/mnist_esl.json > bench/out/mnist_esl.txt 2>&1
$PY bench/method_table.py --table mnist-baselines --epochs 5 --json bench/out/mnist_baselines.json > bench/out/mnist_baselines.txt 2>&1
$PY bench/method_table.py --table mnist-pqi --epochs 5 --json bench/out/mnist_pqi.json > bench/out/mnist_pqi.txt 2>&1
[ -f bench/out/sdsnn_mnist_full/summary.json ] || $PY -m sparsesnn train --quiet --config configs/sdsnn_mnist.toml --run-dir bench/out/sdsnn_mnist_full > bench/out/sdsnn_mnist_full.txt 2>&1
$PY bench/method_table.py --table nmnist-esl --epochs 15 --json bench/out/nmnist_esl.json > bench/out/nmnist_esl.txt 2>&1
$PY bench/rewiring_overhead.py --json bench/out/rewiring_overhead.json > bench/out/rewiring_overhead.txt 2>&1
$PY bench/compact_speed.py --json bench/out/compact_speed.json > bench/out/compact_speed.txt 2>&1
$PY bench/ddp_scaling.py --json bench/out/ddp_scaling.json > bench/out/ddp_scaling.txt 2>&1
$PY bench/run_inference.py bench/out/sdsnn_mnist_full --json bench/out/sdsnn_inference.json > bench/out/sdsnn_inference.txt 2>&1
$PY bench/method_table.py --table mnist-sdsnn --epochs 5 --json bench/out/mnist_sdsnn.json > bench/out/mnist_sdsnn.txt 2>&1
