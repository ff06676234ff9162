#!/usr/bin/env bash
# Installs tmux for the real-terminal display tests (tests/terminal.rs). Nothing to start: each
# test runs its own tmux server on a socket inside its temporary directory and kills it.
#   .ci/tmux.sh        install tmux if missing
#   .ci/tmux.sh stop   nothing to stop (the tests stop their own servers)
set -euo pipefail
if [ "${1:-}" = "stop" ]; then
  exit 0
fi
if ! command -v tmux >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tmux >/dev/null
fi
tmux -V
