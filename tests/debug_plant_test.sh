#!/bin/bash
# The debug build (build/libmapalloc-debug.a) catches planted bugs: a copy of the sources with
# one bug planted (sed) is built as a debug library in a scratch directory (only the planted
# object is recompiled: the copy keeps build/debug's objects and their times), a small program
# linked with it must abort with the assertion line naming the broken invariant, and the same
# program linked with the unplanted debug build must finish. A write after free is caught by
# the fill pattern (no plant), which the default build does not see.
source "$(dirname "$0")/check_lib.sh"

make -s -j2 build/libmapalloc-debug.a build/libmapalloc.a >/dev/null || { not_ok "build"; exit 1; }
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
program=tests/programs/debug_plants.c
link() { # ARCHIVE OUTPUT
  gcc -O1 -g -static -o "$2" "$program" "$1" -lpthread
}
link build/libmapalloc-debug.a "$scratch/clean" || { not_ok "link"; exit 1; }
link build/libmapalloc.a "$scratch/default" || { not_ok "link"; exit 1; }

for what in medium remote; do
  if out=$("$scratch/clean" $what 2>&1) && grep -q '^done' <<<"$out"; then
    ok "unplanted debug build runs '$what' cleanly"
  else
    not_ok "unplanted debug build runs '$what': $out"
  fi
done

# plant NAME FILE SED-EXPRESSION PROGRAM-ARGUMENT EXPECTED-INVARIANT
plant() {
  local name=$1 file=$2 expression=$3 what=$4 expected=$5 copy=$scratch/copy
  rm -rf "$copy" && mkdir -p "$copy/scripts"
  cp -a Makefile src include "$copy/" && cp -a scripts/make "$copy/scripts/"
  mkdir -p "$copy/build" && cp -a build/debug "$copy/build/"
  sed -i "$expression" "$copy/src/$file"
  if cmp -s "src/$file" "$copy/src/$file"; then
    not_ok "$name: the plant did not apply (src/$file changed?)"
    return
  fi
  if ! make -s -j2 -C "$copy" build/libmapalloc-debug.a >"$scratch/build.log" 2>&1; then
    not_ok "$name: the planted copy does not build: $(tail -5 "$scratch/build.log")"
    return
  fi
  link "$copy/build/libmapalloc-debug.a" "$scratch/planted" || { not_ok "$name: link"; return; }
  local out status
  out=$("$scratch/planted" "$what" 2>&1)
  status=$?
  local line
  line=$(grep -m1 '^mapalloc: assertion failed at src/' <<<"$out")
  if [[ $status -ne 134 ]]; then
    not_ok "$name: exit status $status, not an abort: $out"
  elif [[ -z $line ]]; then
    not_ok "$name: no assertion line: $out"
  elif ! grep -q -- "$expected" <<<"$line" || ! grep -qE '\(block/page 0x[0-9a-f]+\)$' <<<"$line"; then
    not_ok "$name: unexpected assertion: $line"
  else
    ok "$name: $line"
  fi
}

plant "a local free that skips the countdown" core/heap.cpp \
  's/if (--page->countdown == 0) heap_page_countdown_zero/if (page->countdown == 0) heap_page_countdown_zero/' \
  medium "local_free holds synced_used - countdown blocks"
plant "a remote free that lands on the wrong page" core/heap_remote.cpp \
  's/if (page_remote_free(page, block))/if (page_remote_free(page + 1, block))/' \
  remote "a remote free lands on the page whose span holds the block"

# A write after free: the fill pattern is found damaged when the block is handed out again.
out=$("$scratch/clean" uaf 2>&1)
status=$?
if [[ $status -eq 134 ]] && grep -qE '^mapalloc: use after free: block 0x[0-9a-f]+ \(64 bytes\) was written at offset 40' <<<"$out"; then
  ok "a write after free is caught by the fill pattern: $(head -1 <<<"$out")"
else
  not_ok "a write after free (status $status): $out"
fi
# ... which the default build does not see (what makes the debug build needed).
out=$("$scratch/default" uaf 2>&1)
if [[ $? -eq 0 ]] && grep -q '^same block' <<<"$out"; then
  ok "the default build does not see the write after free"
else
  not_ok "the default build and the write after free: $out"
fi

finish
