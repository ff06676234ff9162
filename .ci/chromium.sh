#!/usr/bin/env bash
# Installs Debian's headless Chromium and its WebDriver for the page test of `pexen serve`
# (tests/serve_page.rs). Idempotent. Nothing is left running: the test starts chromedriver itself
# on a loopback port and stops it by PID, so `stop` has nothing to do.
#
# The test finds the programs through PEXEN_CHROMEDRIVER (default: `chromedriver` on PATH) and
# PEXEN_CHROMIUM (default: /usr/bin/chromium).
set -euo pipefail

case "${1:-start}" in
  stop) exit 0 ;;
  start) ;;
  *) echo "usage: $0 [start|stop]" >&2; exit 2 ;;
esac

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
    chromium chromium-driver fonts-dejavu-core >/dev/null
fi
chromium --version
chromedriver --version
