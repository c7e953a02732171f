#!/usr/bin/env bash
# Builds the stress programs (every stress/*.c) into OUTDIR.
#
#   stress/build.sh [--static] [--tsan] OUTDIR
#
#   (default)  gcc -O2 -g -pthread: plain malloc & co., for running under any allocator
#              (glibc, or one put in with LD_PRELOAD).
#   --static   linked with -static against build/libmapalloc.a (mapalloc takes over the plain
#              names, libc's own allocations included).
#   --tsan     clang -fsanitize=thread -DSTRESS_MAPALLOC_PREFIX, linked with
#              build/libmapalloc-prefixed.a: the programs call mapalloc_* while the sanitizer
#              keeps its own malloc for everything else.
#
# The mapalloc libraries are taken from $MAPALLOC_BUILD (default: build/ of this checkout);
# run `make` first. $MAPALLOC_LIBRARY names the archive for --static (default libmapalloc;
# libmapalloc-debug for the debug build). Extra compiler flags can be given in $STRESS_CFLAGS.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
lib_dir=${MAPALLOC_BUILD:-$root/build}
library=${MAPALLOC_LIBRARY:-libmapalloc}

mode=preload
outdir=
while [[ $# -gt 0 ]]; do
  case $1 in
    --static) mode=static ;;
    --tsan) mode=tsan ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "build.sh: unknown option $1" >&2; exit 2 ;;
    *) outdir=$1 ;;
  esac
  shift
done
[[ -n $outdir ]] || { echo "usage: build.sh [--static] [--tsan] OUTDIR" >&2; exit 2; }
mkdir -p "$outdir"

warn="-Wall -Wextra -Wno-unused-function"
case $mode in
  preload)
    cc=(gcc -std=gnu11 -O2 -g -pthread $warn)
    libs=()
    ;;
  static)
    [[ -f $lib_dir/$library.a ]] || { echo "build.sh: $lib_dir/$library.a missing (run make)" >&2; exit 1; }
    cc=(gcc -std=gnu11 -O2 -g -pthread -static $warn)
    libs=("$lib_dir/$library.a" -lpthread)
    ;;
  tsan)
    # The ThreadSanitizer-instrumented build of the library (make check-sanitize builds it), so
    # that races inside the allocator are seen, not only the programs' own.
    tsan_lib=$lib_dir/tsan/libmapalloc-prefixed.a
    [[ -f $tsan_lib ]] || { echo "build.sh: $tsan_lib missing (run make check-sanitize)" >&2; exit 1; }
    cc=(clang -std=gnu11 -O1 -g -pthread -fsanitize=thread -DSTRESS_MAPALLOC_PREFIX
        -I"$root/include" $warn)
    libs=("$tsan_lib" -lpthread -lstdc++)
    ;;
esac

status=0
pids=()
names=()
for src in "$here"/*.c; do
  name=$(basename "$src" .c)
  # shellcheck disable=SC2086
  "${cc[@]}" ${STRESS_CFLAGS:-} -o "$outdir/$name" "$src" "${libs[@]}" &
  pids+=($!)
  names+=("$name")
done
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "build.sh: $mode build of ${names[$i]} failed" >&2
    status=1
  fi
done
exit $status
