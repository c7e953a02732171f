#!/usr/bin/env bash
# Real programs with build/libmapalloc.so preloaded must behave exactly as without it.
# Prints "ok <check>" or "FAIL <check>" per check.
set -uo pipefail
cd "$(dirname "$0")/.."
lib=$PWD/build/libmapalloc.so
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

check() {  # check NAME COMMAND... : COMMAND's output and status, preloaded vs not
  local name=$1; shift
  "$@" >"$work/plain.out" 2>&1; local plain_status=$?
  LD_PRELOAD=$lib "$@" >"$work/preload.out" 2>&1; local preload_status=$?
  if [[ $plain_status -eq $preload_status ]] && cmp -s "$work/plain.out" "$work/preload.out"; then
    echo "ok $name"
  else
    echo "FAIL $name (status $plain_status vs $preload_status)"
    diff "$work/plain.out" "$work/preload.out" | head -5
  fi
}

expect_success() {  # expect_success NAME COMMAND...
  local name=$1; shift
  if output=$("$@" 2>&1); then echo "ok $name"; else echo "FAIL $name"; echo "$output" | tail -5; fi
}

check "python3 dict/list/string/big int/json churn" \
  python3 scripts/bench/python_workload.py --mode mixed 0.3
seq 200000 | awk '{ printf "%d %s\n", ($1 * 7919) % 100003, substr("abcdefghij", $1 % 10 + 1) }' \
  >"$work/unsorted.txt"
check "sort of 200000 lines" sort "$work/unsorted.txt"
check "sort -n with a small buffer" sort -n -S 1M "$work/unsorted.txt"
check "g++ -O2 -S on a C++ file" g++ -std=c++17 -O2 -S -o - -Iinclude tests/programs/cxx_prog.cpp
check "sqlite3 insert/index/query" sqlite3 :memory: "create table t(a,b); \
  with recursive n(i) as (select 1 union all select i+1 from n where i<50000) \
  insert into t select i, printf('%d-%x', i*i, i) from n; create index ti on t(b); \
  select count(*), sum(a), max(b) from t where b like '1%';"

gcc -O1 -o "$work/interposed" tests/programs/interposed.c -ldl -lpthread
expect_success "every entry point resolves to mapalloc" env LD_PRELOAD="$lib" "$work/interposed"
g++ -std=c++17 -O1 -Iinclude -DMAPALLOC_PRELOADED -o "$work/cxx_prog" tests/programs/cxx_prog.cpp
expect_success "C++ program: operator new and std::bad_alloc" env LD_PRELOAD="$lib" "$work/cxx_prog"

# Loaded later with dlopen (for its mapalloc_* API, say), the library must fit in the static TLS
# glibc keeps spare for such libraries: its thread-locals must stay a few words.
cat >"$work/dlopen.c" <<'C'
#include <dlfcn.h>
#include <stdio.h>
int main(int argc, char** argv) {
  void* library = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (library == NULL) { fprintf(stderr, "%s\n", dlerror()); return 1; }
  void* (*allocate)(unsigned long) = (void* (*)(unsigned long))dlsym(library, "mapalloc_malloc");
  void (*release)(void*) = (void (*)(void*))dlsym(library, "mapalloc_free");
  if (allocate == NULL || release == NULL) return 2;
  void* block = allocate(100);
  if (block == NULL) return 3;
  release(block);
  return 0;
}
C
gcc -O1 -o "$work/dlopen" "$work/dlopen.c" -ldl
expect_success "loaded with dlopen: mapalloc_malloc and mapalloc_free" "$work/dlopen" "$lib"
