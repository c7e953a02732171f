#!/usr/bin/env bash
# The heap profiler's suite (tests/prof/prof_test.py): accuracy against known allocation sites
# read with the real pprof, secure build, static linking, threads, remote frees, realloc,
# aligned and large blocks, fork, the dump signal and API, and the `mapalloc profile` command.
set -uo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! command -v go >/dev/null; then
  echo "FAIL heap profiler: go (Debian's golang-go) is not installed: scripts/ensure-packages.sh test"
  exit 1
fi
python3 tests/prof/prof_test.py build "$work"
