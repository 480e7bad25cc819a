#!/usr/bin/env bash
# The whole test suite, as `make test` and CI run it.
set -euo pipefail
cd "$(dirname "$0")/.."
export DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false HF_HUB_OFFLINE=1
# System tools some tests drive: docker-compose (validates the compose file
# without an engine) and Debian's chromium (the viewer's browser tests).
if ! command -v docker-compose >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi
  echo "installing docker-compose and chromium (apt-get) for the compose and browser tests …"
  ($SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq docker-compose chromium >/dev/null) \
    || echo "warning: apt-get could not install docker-compose/chromium; the tests needing them will fail with a clear message"
fi
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
