#!/usr/bin/env bash
# Install into .venv if needed, then run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/fashion-mnist.sh
bash scripts/chromium.sh
exec .venv/bin/python -m pytest -q "$@"
