#!/usr/bin/env bash
# Set up .venv (once) with the dev extras and run the tests:
#   scripts/test.sh              # the default suite (minutes, CPU)
#   scripts/test.sh -m slow      # the long checks
set -euo pipefail
cd "$(dirname "$0")/.."
WORLDMODEL_EXTRAS=dev source scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
