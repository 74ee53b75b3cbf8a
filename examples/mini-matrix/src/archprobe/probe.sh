#!/bin/sh
# Print the architecture recorded at build time next to the one running now.
set -eu
echo "built on: $(tr '\n' ' ' < /etc/build-arch)"
echo "running:  $(uname -m) $(dpkg --print-architecture)"
echo "version:  ${APP_VERSION:-unknown}"
