#!/usr/bin/env bash
# Seeds 1 and 2 of every MNIST method-table row (bench/out/mnist_dense-5ep-seed{1,2}); seed 0 is bench/out/mnist_dense-5ep.
# The dense and ESL 10 % rows of seeds 1 and 2 are the runs of bench/out/mnist_seeds (same config), linked in.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
for s in 1 2; do
    d=bench/out/mnist_dense-5ep-seed$s; mkdir -p "$d"
    [ -e "$d/dense" ] || ln -s ../mnist_seeds/method-dense__density-1.0__seed-$s "$d/dense"
    [ -e "$d/esl_10pct" ] || ln -s ../mnist_seeds/method-esl__seed-$s "$d/esl_10pct"
done
row() {  # row TABLE LABEL: that row for seeds 1 and 2
    for s in 1 2; do
        $PY bench/method_table.py --table "$1" --epochs 5 --seed $s --rows "$2" >> bench/out/mnist_seeds_rows.log 2>&1
    done
}
row mnist-esl "EvoKD 10%"
row mnist-sdsnn "SD-SNN"
row mnist-pqi "PQ layer-wise"
row mnist-baselines "SET 10%"
row mnist-baselines "RigL 10%"
row mnist-baselines "static 10%"
row mnist-baselines "GMP 10%"
row mnist-baselines "LTH 10%"
row mnist-pqi "PQ neuron-wise"
row mnist-esl "ESL 50%"
row mnist-esl "ESL 20%"
row mnist-esl "ESL 5%"
row mnist-sdsnn "SD-SNN without constraint"
row mnist-sdsnn "SD-SNN without regeneration"
# the whole tables per seed (every row is finished by now, so these only read)
for s in 1 2; do
    for t in mnist-esl mnist-baselines mnist-pqi mnist-sdsnn; do
        $PY bench/method_table.py --table $t --epochs 5 --seed $s --json bench/out/${t//-/_}_seed$s.json \
            > bench/out/${t//-/_}_seed$s.txt 2>&1
    done
done
