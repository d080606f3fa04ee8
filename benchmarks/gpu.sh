#!/usr/bin/env bash
# The benchmarks whose figures matter on an accelerator, in one run of about 8 minutes on one
# GPU; each table is written under $OUT (default: ./gpu-out). Run it in one `device` call when a
# GPU is lent, then record the tables in benchmarks/README.md with the machine.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
run() {  # name, time limit (s), command...
  local name=$1 limit=$2
  shift 2
  echo "== $name"
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/machine.txt" 2>&1
python3 -c "import jax; print(jax.__version__, jax.devices())" >> "$OUT/machine.txt" 2>&1
# the variants whose compiles fit the limit up to 1000 leaves (unfused jopt and optax compile for ~15 s
# there, 50-100 s at 2000); the table prints each size as it finishes
run step_overhead 90 python3 benchmarks/step_overhead.py --params 2e7 --leaves 10 100 500 1000 \
  --variants optax fused.tree fused.pg floor --repeats 100
run fused_transformer 45 python3 benchmarks/fused_transformer.py --layers 37 --dim 256 --batch 16 --seq 128
run sweep_256 90 python3 benchmarks/sweep_vs_sequential.py --trials 256 --steps 300 --methods sweep scan vmap --devices 1 --memory-budget 16GB
run sweep_1024 120 python3 benchmarks/sweep_vs_sequential.py --trials 1024 --steps 300 --methods sweep scan vmap --devices 1 --memory-budget 64GB
run scaling 45 python3 benchmarks/scaling.py --devices 1 --width 4096 --depth 8 --batch 1024 --steps 20
run optimizer_race 90 python3 benchmarks/optimizer_race.py --steps 600 --lrs 3 --timing-rounds 3 --plot "$OUT/race.png"
