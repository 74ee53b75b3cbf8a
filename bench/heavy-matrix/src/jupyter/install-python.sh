#!/bin/sh
# Debian's python3 and venv from its mirror (pip brings its own CA bundle for PyPI).
set -eu
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    python3 python3-venv >/dev/null
rm -rf /var/lib/apt/lists/*
python3 -m venv /opt/venv
