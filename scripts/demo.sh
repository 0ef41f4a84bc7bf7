#!/usr/bin/env bash
# The main job, end to end on a CPU: install, get Fashion-MNIST, train the cpu-demo preset, sample grids.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/fashion-mnist.sh
RUN=runs/cpu-demo
start=$(date +%s)
.venv/bin/ddpmlab train cpu-demo --run-dir "$RUN" --force
.venv/bin/ddpmlab sample "$RUN" --sampler ddim --steps 50 --n 64 --seed 0 --out "$RUN/grid_ddim50.png"
.venv/bin/ddpmlab sample "$RUN" --sampler ddpm --n 36 --seed 0 --out "$RUN/grid_ddpm1000.png"
echo "demo finished in $(( $(date +%s) - start )) s (after setup): $RUN/grid_ddim50.png, $RUN/grid_ddpm1000.png, $RUN/loss.png"
