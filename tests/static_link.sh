#!/usr/bin/env bash
# build/libmapalloc.a linked into C and C++ programs, dynamically and fully statically.
# Prints "ok <check>" or "FAIL <check>" per check.
set -uo pipefail
cd "$(dirname "$0")/.."
archive=$PWD/build/libmapalloc.a
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

build_and_run() {  # build_and_run NAME OUTPUT COMPILE-COMMAND...
  local name=$1 output=$2; shift 2
  if ! log=$("$@" -o "$output" 2>&1); then
    echo "FAIL $name: link"; echo "$log" | head -10; return
  fi
  if log=$("$output" 2>&1); then echo "ok $name"; else echo "FAIL $name: run"; echo "$log" | tail -5; fi
}

build_and_run "C program linked with libmapalloc.a" "$work/dynamic" \
  gcc -O1 -Iinclude tests/programs/static_prog.c "$archive" -lpthread
build_and_run "fully static C program (gcc -static)" "$work/static" \
  gcc -static -O1 -Iinclude tests/programs/static_prog.c "$archive" -lpthread
build_and_run "C++ program linked with libmapalloc.a" "$work/cxx_dynamic" \
  g++ -O1 -Iinclude tests/programs/cxx_prog.cpp "$archive" -lpthread
build_and_run "fully static C++ program (g++ -static)" "$work/cxx_static" \
  g++ -static -O1 -Iinclude tests/programs/cxx_prog.cpp "$archive" -lpthread

# No symbol of glibc's malloc.o may be left for the static link to pull in.
if nm "$work/static" 2>/dev/null | grep -q ' _int_malloc$'; then
  echo "FAIL glibc's malloc.o was linked into the static program"
else
  echo "ok glibc's malloc.o stays out of the static program"
fi

# Every global symbol of glibc's malloc.o is defined by mapalloc too (any one missing could
# pull malloc.o into a static link beside mapalloc).
libc_a=$(gcc -print-file-name=libc.a)
if [[ -f $libc_a ]] && (cd "$work" && ar x "$libc_a" malloc.o 2>/dev/null); then
  missing=$(comm -23 <(nm --defined-only "$work/malloc.o" | awk '$2 ~ /[TW]/ {print $3}' | sort -u) \
                     <(nm --defined-only "$archive" 2>/dev/null | awk '$2 ~ /[TW]/ {print $3}' | sort -u))
  if [[ -z $missing ]]; then echo "ok every symbol of glibc's malloc.o is defined"; else
    echo "FAIL symbols of glibc's malloc.o not defined: $missing"; fi
else
  echo "FAIL cannot read malloc.o from $libc_a"
fi
