#!/usr/bin/env bash
# Installs the Debian packages a target needs when they are missing (apt-get; sudo if not root).
#   scripts/ensure-packages.sh test    doctest-dev, clang (fuzzer, sanitizers) ...
#   scripts/ensure-packages.sh bench   the baseline allocators, gnuplot for the chart and the
#                                      real programs (sqlite3, redis, jq, lua5.4, perl ...)
set -euo pipefail

case "${1:-}" in
  test)  packages=(doctest-dev python3 clang libclang-rt-14-dev gnuplot-nox pkg-config file golang-go binutils valgrind) ;;
  bench) packages=(libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4 gnuplot-nox valgrind sqlite3
                   redis-server redis-tools python3 jq lua5.4 perl) ;;
  stress) packages=(libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4 sqlite3 redis-server
                   redis-tools lua5.4 perl python3) ;;
  *) echo "usage: $0 test|bench|stress" >&2; exit 2 ;;
esac

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' ||
    missing+=("$package")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "installing: ${missing[*]}"
sudo=()
[[ $(id -u) -ne 0 ]] && sudo=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq >/dev/null || true
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
