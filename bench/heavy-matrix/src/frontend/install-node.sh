#!/bin/sh
# Node.js from Debian's mirror, npm itself from the npm registry (no node image in the lab).
set -eu
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    nodejs ca-certificates curl >/dev/null
rm -rf /var/lib/apt/lists/*
mkdir -p /opt/npm
curl -fsSL "${NPM_REGISTRY%/}/npm/-/npm-${NPM_VERSION}.tgz" | tar -xz -C /opt/npm --strip-components=1
ln -s /opt/npm/bin/npm-cli.js /usr/local/bin/npm
chmod +x /opt/npm/bin/npm-cli.js
node --version && npm --version
