#!/bin/sh
# The tools AI-Infra-Matrix's node images install with apt-get from Debian's mirror.
set -eu
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    curl procps jq iproute2 less rsync >/dev/null
rm -rf /var/lib/apt/lists/*
dpkg -l | grep -c '^ii'
