#!/bin/bash
# Memcheck sees mapalloc's blocks in a program linked statically with the debug build
# (build/libmapalloc-debug.a): planted use after free, overflow into the next block,
# uninitialised read and leak are each reported as memcheck reports them with glibc, and a
# clean program has no error. The same programs linked with the default build
# (build/libmapalloc.a) get no report at all: memcheck is blind there, which is what the debug
# build's client requests change.
source "$(dirname "$0")/check_lib.sh"

command -v valgrind >/dev/null || { not_ok "valgrind is not installed"; exit 1; }
[[ -f /usr/include/valgrind/memcheck.h ]] || { not_ok "no /usr/include/valgrind (Debian's valgrind package)"; exit 1; }
make -s -j2 build/libmapalloc-debug.a build/libmapalloc.a >/dev/null || { not_ok "build"; exit 1; }
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for library in debug default; do
  archive=build/libmapalloc-$library.a
  [[ $library == default ]] && archive=build/libmapalloc.a
  gcc -O1 -g -static -o "$scratch/$library" tests/programs/memcheck_plants.c "$archive" -lpthread ||
    { not_ok "link with $archive"; exit 1; }
done

memcheck() { # BINARY CASE: memcheck's report (its exit status 99 when it found errors)
  valgrind --suppressions=scripts/memcheck-static.supp --leak-check=full --error-exitcode=99 \
    "$@" 2>&1
}

# expect CASE PATTERN...: the debug build's run reports every PATTERN (extended regexes).
expect() {
  local what=$1 out status missing=""
  shift
  out=$(memcheck "$scratch/debug" "$what")
  status=$?
  for pattern in "$@"; do grep -qE -- "$pattern" <<<"$out" || missing+=" '$pattern'"; done
  if [[ $status -ne 99 ]]; then
    not_ok "$what: memcheck exit status $status, not 99: $(grep -E '^==[0-9]+== [A-Z]' <<<"$out" | head -5)"
  elif [[ -n $missing ]]; then
    not_ok "$what: memcheck did not report$missing: $(grep -E '^==[0-9]+== ' <<<"$out" | head -12)"
  else
    ok "$what reported: $(grep -m1 -E "$1" <<<"$out" | sed 's/^==[0-9]*== //')"
  fi
}

expect uaf 'Invalid write of size 1' 'inside a block of size 48 free.d' 'memcheck_plants.c'
expect overflow 'Invalid write of size 1' '0 bytes after a block of size 32 alloc.d'
expect uninit 'Conditional jump or move depends on uninitialised value' 'memcheck_plants.c'
expect leak '100 bytes in 1 blocks are definitely lost' 'memcheck_plants.c'

out=$(memcheck "$scratch/debug" clean)
status=$?
if [[ $status -eq 0 ]] && grep -q 'ERROR SUMMARY: 0 errors' <<<"$out"; then
  ok "a clean program: no error (malloc, calloc, realloc, posix_memalign, remote frees)"
else
  not_ok "a clean program (status $status): $(grep -E '^==[0-9]+== ' <<<"$out" | head -20)"
fi

# The default build: memcheck sees no block, so none of the planted errors is reported.
for what in uaf overflow uninit leak; do
  out=$(memcheck "$scratch/default" "$what")
  status=$?
  if [[ $status -eq 0 ]] && grep -q 'ERROR SUMMARY: 0 errors' <<<"$out"; then
    ok "default build: memcheck is blind to the planted $what"
  else
    not_ok "default build, $what: memcheck reported something (status $status): $(grep -E '^==[0-9]+== [A-Z]' <<<"$out" | head -5)"
  fi
done

finish
