#!/usr/bin/env bash
# Fashion-MNIST offline from Debian's package where apt is usable (files under /usr/share/datasets/fashion-mnist).
# Elsewhere ddpmlab downloads it through torchvision on first use.
set -uo pipefail
if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null; } \
    || echo "note: could not install dataset-fashion-mnist; ddpmlab will download Fashion-MNIST instead"
fi
