#!/usr/bin/env bash
# Runs every test suite of `make test` and ends with one summary line: "N passed, N failed".
# Each doctest case and each shell check counts as one test.
set -uo pipefail
cd "$(dirname "$0")/.."

passed=0
failed=0
failed_names=()

# doctest binaries: their own summary line gives the counts.
run_doctest() {
  local name=$1; shift
  echo "== $name"
  local start=$SECONDS
  local log
  log=$(mktemp)
  "$@" 2>&1 | tee "$log" | grep -E '^(\[doctest\] test cases|.*ERROR|.*FATAL|TEST CASE)' || true
  local line
  line=$(grep '^\[doctest\] test cases' "$log" | tail -1)
  if [[ -z $line ]]; then
    echo "   $name did not finish:"; tail -20 "$log"
    failed=$((failed + 1)); failed_names+=("$name (crashed)")
  else
    local p f
    p=$(sed -E 's/.*\| *([0-9]+) passed.*/\1/' <<<"$line")
    f=$(sed -E 's/.*\| *([0-9]+) failed.*/\1/' <<<"$line")
    passed=$((passed + p)); failed=$((failed + f))
    [[ $f -ne 0 ]] && failed_names+=("$name")
  fi
  rm -f "$log"
  echo "   ($((SECONDS - start)) s)"
}

# Shell suites print "ok <name>" / "FAIL <name>" lines.
run_checks() {
  local name=$1; shift
  echo "== $name"
  local start=$SECONDS
  local output
  output=$("$@" 2>&1)
  # ok/FAIL lines, and after a FAIL whatever the check printed about it (up to 20 lines), so
  # that a failure seen only in CI leaves its evidence in the log.
  echo "$output" | awk '/^ok /{ detail = 0; print "   " $0; next }
                        /^FAIL /{ detail = 20; print "   " $0; next }
                        detail > 0 { detail--; print "      | " $0 }'
  local p f
  p=$(grep -c '^ok ' <<<"$output" || true)
  f=$(grep -c '^FAIL ' <<<"$output" || true)
  if [[ $p -eq 0 && $f -eq 0 ]]; then
    echo "$output" | tail -20; f=1
  fi
  passed=$((passed + p)); failed=$((failed + f))
  [[ $f -ne 0 ]] && failed_names+=("$name")
  echo "   ($((SECONDS - start)) s)"
}

run_checks "layers of src/ (scripts/check_layers.py)" tests/layers_test.sh
run_doctest "unit tests" build/tests/unit
run_doctest "unit tests, secure build" build/tests/unit-secure
run_checks "preloaded real programs" tests/preload_smoke.sh
run_checks "static linking" tests/static_link.sh
run_checks "mapalloc command, install" tests/cli_test.sh
run_checks "allocation traces: record, replay, trace-info" tests/trace_test.sh
run_checks "fuzzer, short run" make --no-print-directory fuzz-quick
run_checks "stress suite, small scale (preloaded and static)" stress/run.sh --quick
run_checks "stress suite under ThreadSanitizer" stress/run.sh --allocators "" --tsan
run_checks "security suite: mapalloc's catches (tests/security/expected.txt)" tests/security/run.py --check tests/security/expected.txt
run_checks "heap profiler" tests/prof/prof_test.sh
run_checks "stress suite with the heap profiler sampling every 256 bytes (preloaded and static)" stress/run.sh --quick --profile
run_doctest "unit tests, debug build" build/tests/unit-debug
run_checks "stress suite against the debug build, small scale (preloaded)" stress/run.sh --quick --no-static --library debug
run_checks "debug build catches planted bugs" tests/debug_plant_test.sh
run_checks "memcheck sees the debug build's blocks (static linking)" tests/memcheck_test.sh
run_doctest "unit tests, UBSan build" build/tests/unit-ubsan

[[ ${#failed_names[@]} -gt 0 ]] && echo "failed suites: ${failed_names[*]}"
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
