#!/bin/sh
# Stand-in for the real wrapper entrypoint: report and exit.
set -eu
echo "mini-matrix gitea ${GITEA_VERSION:-unknown} (image ${APP_VERSION:-dev})"
exec "$@"
