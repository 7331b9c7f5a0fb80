#!/usr/bin/env bash
# Second half of the benchmark queue (this stop's order): the remaining single benchmarks, the 15-epoch PQ-index
# recipe, the N-MNIST sweeps with 3 seeds for RESULTS.md, then the SD-SNN ablation table. Re-running skips what is
# finished (the sweeps and method_table reuse finished runs).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
SW="$PY -m sparsesnn sweep --jobs 2 --threads 1 --seeds 3"
[ -f bench/out/compact_speed.json ] || $PY bench/compact_speed.py --json bench/out/compact_speed.json > bench/out/compact_speed.txt 2>&1
[ -f bench/out/ddp_scaling.json ] || $PY bench/ddp_scaling.py --json bench/out/ddp_scaling.json > bench/out/ddp_scaling.txt 2>&1
[ -f bench/out/sdsnn_inference.json ] || $PY bench/run_inference.py bench/out/sdsnn_mnist_full --json bench/out/sdsnn_inference.json > bench/out/sdsnn_inference.txt 2>&1
[ -f bench/out/pqi_mnist_full/summary.json ] || $PY -m sparsesnn train --quiet --config configs/pqi_mnist.toml --run-dir bench/out/pqi_mnist_full > bench/out/pqi_mnist_full.txt 2>&1
$SW --config configs/nmnist_convnet.toml --grid sparse.method=dense,static,set,rigl,gmp,lth,esl --set sparse.density=0.1 --out bench/out/nmnist_sweep/methods > bench/out/nmnist_sweep_methods.txt 2>&1
$SW --config configs/pqi_nmnist.toml --out bench/out/nmnist_sweep/pqi > bench/out/nmnist_sweep_pqi.txt 2>&1
$SW --config configs/sdsnn_nmnist.toml --out bench/out/nmnist_sweep/sdsnn > bench/out/nmnist_sweep_sdsnn.txt 2>&1
$SW --config configs/evokd_nmnist.toml --set distill.teacher_run=bench/out/nmnist_sweep/methods/method-dense__density-1.0__seed-0 --out bench/out/nmnist_sweep/evokd > bench/out/nmnist_sweep_evokd.txt 2>&1
$PY bench/method_table.py --table mnist-sdsnn --epochs 5 --json bench/out/mnist_sdsnn.json > bench/out/mnist_sdsnn.txt 2>&1
