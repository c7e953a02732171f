#!/usr/bin/env bash
# make bench / make bench-quick: installs missing baselines, then runs the driver.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-packages.sh bench
exec python3 scripts/bench.py "$@"
