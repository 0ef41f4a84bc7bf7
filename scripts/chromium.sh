#!/usr/bin/env bash
# Headless Chromium for the report's browser test (tests/report/test_compare.py), from Debian's package where apt is
# usable. Elsewhere that test is skipped and says why.
set -uo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null; } \
    || echo "note: could not install chromium; the report's browser test will be skipped"
else
  echo "note: no apt-get here to install chromium; the report's browser test will be skipped"
fi
