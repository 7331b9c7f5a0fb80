#!/usr/bin/env bash
# Regenerate the reports behind RESULTS.md from the benchmark runs (bench/run_queue.sh writes them):
#   scripts/results-page.sh
# Each report (HTML, PNGs, table.md, results.json) goes to docs/results/<name>/; RESULTS.md quotes the tables and
# embeds the PNGs. The papers' reported points come from configs/reference/reported_points.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
REF=configs/reference/reported_points.toml
report() {  # report NAME RUN_DIR...
    local name=$1; shift
    local dirs=()
    for d in "$@"; do [ -d "$d" ] && dirs+=("$d"); done
    if [ ${#dirs[@]} -eq 0 ]; then echo "results-page: no runs for $name (skipped)"; return; fi
    "$PY" -m sparsesnn report "${dirs[@]}" --out "docs/results/$name" --reference "$REF"
}
report mnist bench/out/mnist_dense-5ep                         # the 5-epoch method tables
report mnist_15ep runs/mnist_dense bench/out/pqi_mnist_full bench/out/sdsnn_mnist_full   # the 15-epoch recipes
report mnist_sdsnn bench/out/mnist_dense-5ep/{dense,sd-snn,sd-snn_without_constraint,sd-snn_without_regeneration}
# N-MNIST: the 3-seed sweeps (bench/run_queue.sh), and the ESL densities of the seed-0 table beside them; the
# baselines with their own layer selection (nmnist) and with ESL's (nmnist_same_layers); SD-SNN's recipe has a
# 512-unit hidden layer and its own dense reference (nmnist_sdsnn)
report nmnist bench/out/nmnist_sweep/methods bench/out/nmnist_sweep/pqi bench/out/nmnist_sweep/sdsnn \
    bench/out/nmnist_sweep/evokd bench/out/nmnist_convnet-15ep/esl_{50,20,5}pct
report nmnist_same_layers bench/out/nmnist_sweep/methods/method-{dense,esl}__* bench/out/nmnist_sweep/pqi \
    bench/out/nmnist_sweep/evokd bench/out/nmnist_sweep/baselines_same_layers
report nmnist_sdsnn bench/out/nmnist_sweep/sdsnn_dense bench/out/nmnist_sweep/sdsnn \
    bench/out/nmnist_sweep/sdsnn_no_constraint bench/out/nmnist_sweep/sdsnn_no_regeneration
# MNIST seeds 0-2 of the dense and ESL 10 % rows (seed 0 is the 5-epoch table's run)
report mnist_seeds bench/out/mnist_dense-5ep/{dense,esl_10pct} bench/out/mnist_seeds
# every MNIST method-table row over seeds 0-2 (bench/run_queue_seeds.sh); a row shows how many seeds have finished
report mnist_3seeds bench/out/mnist_dense-5ep bench/out/mnist_dense-5ep-seed1 bench/out/mnist_dense-5ep-seed2
