#!/usr/bin/env bash
# Installs python3 (for the Python generator in factories/machine) when it is missing.
# Idempotent; nothing to start or stop: `.ci/python3.sh stop` does nothing.
set -euo pipefail
if [ "${1:-}" = stop ]; then
    exit 0
fi
if ! command -v python3 >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-minimal >/dev/null
fi
python3 --version
