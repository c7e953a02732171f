# Sourced by the shell test scripts that print ok/FAIL lines (tests/run_all.sh counts them):
# runs from the checkout's root, counts the lines, and `finish` prints the tally and fails if
# a check failed.
set -u
cd "$(dirname "$0")/.."
passed=0
failed=0
ok() { echo "ok $1"; passed=$((passed + 1)); }
not_ok() { echo "FAIL $1"; failed=$((failed + 1)); }
finish() {
  echo "$passed passed, $failed failed"
  [[ $failed -eq 0 ]]
}
