#!/bin/bash
# The layer checker (scripts/check_layers.py): src/ passes, and a copy of src/ with each kind of
# planted fault fails with the fault named.
source "$(dirname "$0")/check_lib.sh"

if out=$(scripts/check_layers.py src 2>&1); then ok "src/ keeps its layers"; else
  not_ok "src/ keeps its layers: $out"
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# plant NAME FILE LINE EXPECTED: appends LINE to a copy's FILE; the checker must fail, saying EXPECTED.
plant() {
  rm -rf "$scratch/src" && cp -r src "$scratch/src"
  printf '%s\n' "$3" >>"$scratch/src/$2"
  if out=$(scripts/check_layers.py "$scratch/src" 2>&1); then
    not_ok "$1: the checker passed"
  elif grep -q -- "$4" <<<"$out"; then
    ok "$1"
  else
    not_ok "$1: unexpected report: $out"
  fi
}
plant "a lower layer including a higher one" core/page.cpp '#include "api/alloc.h"' \
  'core/ includes the higher layer "api/alloc.h"'
plant "a system call outside platform/" core/segment.cpp \
  'static void* planted() { return mmap(nullptr, 4096, 0, 0, -1, 0); }' 'calls mmap() outside'
plant "a system header outside platform/" api/api.cpp '#include <sys/mman.h>' \
  'system header outside src/platform/'
plant "an include cycle (init and alloc)" api/init.cpp '#include "api/alloc.h"' 'include cycle'
rm -rf "$scratch/src" && cp -r src "$scratch/src" && touch "$scratch/src/stray.cpp"
if out=$(scripts/check_layers.py "$scratch/src" 2>&1); then not_ok "a file outside the layer folders"
elif grep -q "belongs to a layer folder" <<<"$out"; then ok "a file outside the layer folders"
else not_ok "a file outside the layer folders: $out"; fi
finish
