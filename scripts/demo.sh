#!/usr/bin/env bash
# The main job, end to end on a CPU: install, get Fashion-MNIST, train the cpu-demo-latent preset (a latent DDPM:
# an autoencoder, then a DDPM on its 7×7×8 latents; 7 minutes on 2 AVX-512 cores, an estimated 20 to 30 on AVX2-only
# ones), sample grids.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/fashion-mnist.sh
RUN=runs/cpu-demo-latent
start=$(date +%s)
.venv/bin/ddpmlab train cpu-demo-latent --run-dir "$RUN" --force
# the preset's sampler: DPM-Solver++ 10 steps autoguided (20 network evaluations), then 1,000 ancestral steps (Ho et
# al.'s sampler), autoguided too
.venv/bin/ddpmlab sample "$RUN" --n 64 --seed 0 --out "$RUN/grid_dpmsolver10.png"
.venv/bin/ddpmlab sample "$RUN" --sampler ddpm --n 36 --seed 0 --out "$RUN/grid_ddpm1000.png"
echo "demo finished in $(( $(date +%s) - start )) s (after setup): $RUN/grid_dpmsolver10.png, $RUN/grid_ddpm1000.png, $RUN/loss.png"
