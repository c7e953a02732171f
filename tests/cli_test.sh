#!/usr/bin/env bash
# Tests of the `mapalloc` command (scripts/mapalloc) and of make install / uninstall
# (scripts/make/install.mk). One line per check, "ok <what>" or "FAIL <what>"; exit status 0 iff all
# passed. About 15 s on 2 cores: compare runs a fast program once per allocator.
# Needs gnuplot-nox, pkg-config and file besides the build tools.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tool=$root/scripts/mapalloc
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0

check() {  # check WHAT CONDITION...: runs the condition, prints ok/FAIL
  local what=$1; shift
  if "$@"; then echo "ok $what"; else echo "FAIL $what"; failures=$((failures + 1)); fi
}
contains() { grep -q -- "$2" "$1"; }   # contains FILE PATTERN

make -s all >/dev/null 2>&1 || { echo "FAIL make all"; exit 1; }
# A small program that allocates, prints a deterministic result and exits with status 3.
cat >"$tmp/prog.c" <<'EOF'
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char** argv) {
  long sum = 0;
  for (int i = 0; i < 20000; ++i) {
    long* p = malloc(16 + i % 4000);
    p[0] = i;
    sum += p[0];
    free(p);
  }
  printf("sum %ld\n", sum);
  fprintf(stderr, "program's own stderr\n");
  return argc > 1 ? atoi(argv[1]) : 0;
}
EOF
cc -O1 -o "$tmp/prog" "$tmp/prog.c" || { echo "FAIL compile test program"; exit 1; }

# ---- help and version ---------------------------------------------------------------------
"$tool" --help >"$tmp/out" 2>&1
check "mapalloc --help lists the commands" contains "$tmp/out" "trace-info"
for command in run stats plot compare; do
  "$tool" $command --help >"$tmp/out" 2>&1
  status=$?
  check "mapalloc $command --help" \
    bash -c "[[ $status -eq 0 ]] && grep -q 'usage: mapalloc $command' '$tmp/out'"
done
version=$(awk '/#define MAPALLOC_VERSION_(MAJOR|MINOR|PATCH) / {v = v s $3; s = "."} END {print v}' \
  include/mapalloc.h)
check "mapalloc --version is the header's ($version)" \
  test "$("$tool" --version)" = "mapalloc $version"

# ---- run ----------------------------------------------------------------------------------
"$tool" run --stats -- "$tmp/prog" >"$tmp/out" 2>"$tmp/err"
check "run --stats: the program's output, the table on stderr" \
  bash -c "grep -qx 'sum 199990000' '$tmp/out' && grep -q '^mapalloc statistics' '$tmp/err' \
    && grep -q \"program's own stderr\" '$tmp/err'"
"$tool" run -- "$tmp/prog" 7 >/dev/null 2>&1
status=$?
check "run propagates the exit status" test $status -eq 7
check "run preloads libmapalloc.so" \
  test "$("$tool" run -- sh -c 'echo $LD_PRELOAD')" = "$root/build/libmapalloc.so"
check "run --secure preloads libmapalloc-secure.so" \
  test "$("$tool" run --secure -- sh -c 'echo $LD_PRELOAD')" = "$root/build/libmapalloc-secure.so"
"$tool" run --stats --sample 10 --stats-file "$tmp/run.stats" -- \
  python3 -c 'import time; time.sleep(0.1)'
check "run --sample --stats-file: samples and table in the file" \
  bash -c "grep -q '^time_ms,in_use_bytes' '$tmp/run.stats' \
    && grep -q '^mapalloc statistics' '$tmp/run.stats'"

# ---- stats --------------------------------------------------------------------------------
"$tool" stats -- "$tmp/prog" 3 >"$tmp/out" 2>"$tmp/err"
status=$?
check "stats keeps the program's exit status" test $status -eq 3
check "stats keeps the program's stdout intact" bash -c "[[ \$(cat '$tmp/out') == 'sum 199990000' ]]"
check "stats prints the summary, wall time and peak RSS on stderr" \
  bash -c "grep -q '^mapalloc statistics' '$tmp/err' && grep -q 'wall time .* peak RSS' '$tmp/err'"
"$tool" stats --sample 10 --csv "$tmp/samples.csv" -- \
  python3 -c 'import time; a = [bytes(1000) for _ in range(20000)]; time.sleep(0.1)' 2>"$tmp/err"
check "stats --sample --csv saves the samples" \
  bash -c "head -1 '$tmp/samples.csv' | grep -qx 'time_ms,in_use_bytes,mapped_bytes,resident_bytes' \
    && [[ \$(wc -l <'$tmp/samples.csv') -ge 5 ]] && grep -q 'samples .* peaks' '$tmp/err'"

# ---- plot ---------------------------------------------------------------------------------
"$tool" plot "$tmp/samples.csv" -o "$tmp/chart.png" >/dev/null
check "plot draws a PNG" bash -c "file '$tmp/chart.png' | grep -q 'PNG image data'"
"$tool" plot "$tmp/run.stats" -o "$tmp/chart2.png" >/dev/null
check "plot reads a raw stats file (table skipped)" \
  bash -c "file '$tmp/chart2.png' | grep -q 'PNG image data'"
printf 'time_ms,in_use_bytes,mapped_bytes,resident_bytes\n0,1,2\n' >"$tmp/bad.csv"
"$tool" plot "$tmp/bad.csv" -o "$tmp/bad.png" 2>"$tmp/err"
status=$?
check "plot: a malformed CSV is a one-line error" \
  bash -c "[[ $status -eq 2 && \$(wc -l <'$tmp/err') -eq 1 && ! -e '$tmp/bad.png' ]] \
    && grep -q 'bad.csv:2: not a sample line' '$tmp/err'"
PATH=/nonexistent /usr/bin/python3 "$tool" plot "$tmp/samples.csv" -o "$tmp/x.png" 2>"$tmp/err"
check "plot without gnuplot names gnuplot-nox" contains "$tmp/err" "apt-get install gnuplot-nox"

# ---- compare ------------------------------------------------------------------------------
"$tool" compare --runs 1 --allocators glibc mapalloc -- "$tmp/prog" >"$tmp/out" 2>/dev/null
status=$?
check "compare glibc/mapalloc: a table with ratios" \
  bash -c "[[ $status -eq 0 ]] && grep -q '^wall time .* x[0-9]' '$tmp/out' \
    && grep -q '^CPU time .* x[0-9]' '$tmp/out' && grep -q '^peak RSS .* x[0-9]' '$tmp/out' \
    && grep -q '^minor faults  *[0-9][0-9]*  *[0-9][0-9]* x[0-9]' '$tmp/out' \
    && grep -q 'outputs agree' '$tmp/out'"
"$tool" compare --runs 1 -- "$tmp/prog" >"$tmp/out" 2>/dev/null
# (the baselines installed by `make bench`; those missing are left out with a note)
check "compare with the default allocators" \
  bash -c "grep -q '^metric  *mapalloc  *glibc' '$tmp/out' && grep -q 'outputs agree' '$tmp/out'"
"$tool" compare --runs 2 --allocators glibc -- python3 -c 'import os; print(os.urandom(8).hex())' \
  >"$tmp/out" 2>"$tmp/err"
status=$?
check "compare warns about a nondeterministic program (status 1, no traceback)" \
  bash -c "[[ $status -eq 1 ]] && grep -q 'WARNING: the outputs differ' '$tmp/out' \
    && grep -q 'nondeterministic' '$tmp/out' && ! grep -q Traceback '$tmp/err'"

"$tool" compare --runs 1 --allocators glibc,other=build/libmapalloc-secure.so -- "$tmp/prog" \
  >"$tmp/out" 2>/dev/null
status=$?
check "compare with another allocator as NAME=PATH.so" \
  bash -c "[[ $status -eq 0 ]] && grep -q '^metric  *mapalloc  *glibc  *other *$' '$tmp/out' \
    && grep -q '^minor faults .* x[0-9.]*  *[0-9][0-9]* x[0-9]' '$tmp/out' \
    && grep -q 'outputs agree' '$tmp/out'"

# ---- errors -------------------------------------------------------------------------------
"$tool" run -- no-such-program-xyz 2>"$tmp/err"
status=$?
check "missing program: one line, status 127" \
  test "$status $(cat "$tmp/err")" = "127 mapalloc: no such program: no-such-program-xyz"
"$tool" compare --allocators nosuchalloc -- true 2>"$tmp/err"
check "unknown allocator: one line" \
  bash -c "[[ \$(wc -l <'$tmp/err') -eq 1 ]] \
    && grep -q 'unknown allocator: nosuchalloc' '$tmp/err'"
"$tool" compare --allocators other=/nonexistent/libother.so -- true 2>"$tmp/err"
check "NAME=PATH.so with a missing library: one line" \
  test "$(cat "$tmp/err")" = "mapalloc: other: no such library: /nonexistent/libother.so"
"$tool" compare --allocators other="$tmp/prog.c" -- true 2>"$tmp/err"
check "NAME=PATH.so that cannot be preloaded: one line" \
  bash -c "[[ \$(wc -l <'$tmp/err') -eq 1 ]] && grep -q '^mapalloc: other: cannot preload' '$tmp/err'"
python3 scripts/bench.py --extra other=/nonexistent/libother.so >"$tmp/out" 2>"$tmp/err"
status=$?
check "bench.py --extra with a missing library: one line, nothing run" \
  bash -c "[[ $status -ne 0 && ! -s '$tmp/out' ]] \
    && [[ \$(cat '$tmp/err') == 'bench.py: other: no such library: /nonexistent/libother.so' ]]"
# measure --prime-mib touches and frees memory before the command starts: the command's status
# and report are its own, and its peak RSS does not include the primed memory.
make -s build/bench/measure >/dev/null 2>&1
build/bench/measure --prime-mib 256 --report "$tmp/report" -- "$tmp/prog" 3 >/dev/null 2>&1
status=$?
check "measure --prime-mib: the command's status and a report with its own peak RSS" \
  bash -c "[[ $status -eq 3 ]] && read -r seconds peak_kib rest <'$tmp/report' \
    && (( peak_kib > 0 && peak_kib < 64 * 1024 ))"
python3 scripts/bench/pairs.py --against nosuchalloc >"$tmp/out" 2>"$tmp/err"
status=$?
check "bench pairs: an unknown allocator is one line, nothing run" \
  bash -c "[[ $status -ne 0 && ! -s '$tmp/out' ]] && [[ \$(cat '$tmp/err') == 'pairs.py: unknown allocator: nosuchalloc'* ]]"
python3 scripts/bench/pairs.py --library /nonexistent/libmapalloc.so >"$tmp/out" 2>"$tmp/err"
check "bench pairs: a library that cannot be preloaded is one line, nothing run" \
  bash -c "[[ ! -s '$tmp/out' ]] && [[ \$(cat '$tmp/err') == 'pairs.py: no such library: /nonexistent/libmapalloc.so' ]]"
if (( $(nproc) >= 2 )); then
  python3 scripts/bench/pairs.py --pairs 1 --only lifo --against glibc --output "$tmp/pairs.md" \
    >"$tmp/out" 2>"$tmp/err"
  # One allocator: the ratio to the fastest other is its median.
  check "bench pairs: lifo against glibc, one pair: a row with a ratio, its range, the means" \
    bash -c "grep -Eq '^\| lifo \| ([0-9]+\.[0-9]{3}) \([0-9.]+-[0-9.]+\) \| \1 \|$' '$tmp/out' \
      && grep -q '^- geometric mean, mapalloc / the fastest other, synthetic: ' '$tmp/out' \
      && cmp -s '$tmp/out' '$tmp/pairs.md' || { cat '$tmp/err'; false; }"
fi
MAPALLOC_BASELINE_LIBDIR=/nonexistent "$tool" compare --allocators jemalloc -- true 2>"$tmp/err"
check "missing baseline: apt-get hint" \
  test "$(cat "$tmp/err")" = "mapalloc: jemalloc is not installed: apt-get install libjemalloc2"
MAPALLOC_BUILD=/nonexistent "$tool" run -- true 2>"$tmp/err"
check "missing library: run make" \
  bash -c "[[ \$(wc -l <'$tmp/err') -eq 1 ]] && grep -q 'run .make.' '$tmp/err'"
if [[ -e scripts/mapalloc_trace.py ]]; then
  "$tool" trace-info --help >/dev/null 2>"$tmp/err"
  check "trace-info dispatched to mapalloc_trace.py" \
    bash -c "! grep -q 'is not available' '$tmp/err'"
else
  "$tool" record -- true 2>"$tmp/err"
  status=$?
  check "record without mapalloc_trace.py: a clear error" \
    bash -c "[[ $status -eq 2 ]] \
      && grep -q \"'record' is not available: .*mapalloc_trace.py\" '$tmp/err'"
fi

# ---- make install / uninstall -------------------------------------------------------------
makefiles=(-f Makefile)  # (it includes scripts/make/install.mk)
prefix=$tmp/prefix
make -s "${makefiles[@]}" install PREFIX="$prefix" >"$tmp/install.log" 2>&1
status=$?
installed() {  # installed STATUS: make install succeeded and put every file in place
  local file
  [[ $1 -eq 0 ]] || return 1
  for file in lib/libmapalloc.so lib/libmapalloc-secure.so lib/libmapalloc.a include/mapalloc.h \
      lib/pkgconfig/mapalloc.pc bin/mapalloc lib/mapalloc/mapalloc_common.py \
      lib/mapalloc/bench.py lib/mapalloc/measure lib/libmapalloc-trace.so lib/mapalloc/replay \
      lib/mapalloc/trace-info lib/mapalloc/mapalloc_trace.py; do
    [[ -e $prefix/$file ]] || { echo "not installed: $file"; return 1; }
  done
}
check "make install PREFIX=..." installed $status
cat >"$tmp/user.c" <<'EOF'
#include <mapalloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(void) {
  void* p = malloc(10);
  int owned = mapalloc_owns(p);
  printf("%s %d\n", mapalloc_version(), owned);
  free(p);
  return owned == 1 ? 0 : 1;
}
EOF
flags=$(PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --cflags --libs mapalloc)
cc -o "$tmp/user" "$tmp/user.c" $flags 2>"$tmp/err"
check "pkg-config --cflags --libs mapalloc builds a program" test -x "$tmp/user"
check "that program uses the installed mapalloc" \
  test "$(LD_LIBRARY_PATH=$prefix/lib "$tmp/user")" = "$version 1"
check "installed mapalloc run preloads the installed library" \
  test "$("$prefix/bin/mapalloc" run -- sh -c 'echo $LD_PRELOAD')" = "$prefix/lib/libmapalloc.so"
"$prefix/bin/mapalloc" run --stats -- "$tmp/prog" >"$tmp/out" 2>"$tmp/err"
check "installed mapalloc run --stats works" \
  bash -c "grep -qx 'sum 199990000' '$tmp/out' && grep -q '^mapalloc statistics' '$tmp/err'"
"$prefix/bin/mapalloc" stats -- "$tmp/prog" >/dev/null 2>"$tmp/err"
check "installed mapalloc stats works (installed measure helper)" contains "$tmp/err" "wall time"
(cd "$tmp" && "$prefix/bin/mapalloc" record -o installed.trace -- "$tmp/prog" >/dev/null 2>&1 &&
  "$prefix/bin/mapalloc" trace-info installed.trace >"$tmp/info" 2>&1 &&
  "$prefix/bin/mapalloc" replay --allocator mapalloc,glibc --runs 1 installed.trace \
    >"$tmp/replay" 2>&1)
check "installed mapalloc record, trace-info and replay work" \
  bash -c "grep -q '^malloc ' '$tmp/info' && grep -q 'blocks checked' '$tmp/replay'"
make -s "${makefiles[@]}" uninstall PREFIX="$prefix" >>"$tmp/install.log" 2>&1
check "make uninstall removes every installed file" test -z "$(find "$prefix" ! -type d)"
make -s "${makefiles[@]}" install DESTDIR="$tmp/stage" PREFIX=/usr >>"$tmp/install.log" 2>&1
check "make install DESTDIR=... PREFIX=/usr: mapalloc.pc says prefix=/usr" \
  contains "$tmp/stage/usr/lib/pkgconfig/mapalloc.pc" "^prefix=/usr$"

[[ $failures -eq 0 ]]
