#!/usr/bin/env bash
# Set up .venv (once) and run worldmodel with the given arguments:
#   scripts/run.sh                      # the default run: data=small, hardware=auto
#   scripts/run.sh data=tiny hardware=cpu
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec .venv/bin/worldmodel "$@"
