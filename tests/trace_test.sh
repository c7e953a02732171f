#!/usr/bin/env bash
# Allocation traces: record with build/libmapalloc-trace.so, read with trace-info, replay under
# every installed allocator, reject bad traces. Prints "ok <check>" / "FAIL <check>" per check
# (and "note ..." lines: the traced run's slowdown, allocator bugs found).
set -uo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

ok() { echo "ok $*"; }
fail() { echo "FAIL $*"; }

# The tools: `make trace-tools` (scripts/make/trace.mk).
makefiles=()
if ! make --no-print-directory "${makefiles[@]}" trace-tools >"$work/make.log" 2>&1; then
  fail "make trace-tools"; tail -20 "$work/make.log"; exit 1
fi
# The mapalloc command if it is there, else the module's own dispatcher.
if [[ -x scripts/mapalloc ]]; then mapalloc=(scripts/mapalloc); else
  mapalloc=(python3 scripts/mapalloc_trace.py); fi

allocators=(glibc:)
allocators+=("mapalloc:$PWD/build/libmapalloc.so")
for lib in jemalloc:/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 \
           mimalloc:/usr/lib/x86_64-linux-gnu/libmimalloc.so.2; do
  [[ -e ${lib#*:} ]] && allocators+=("$lib")
done

# json FILE EXPRESSION...: each Python expression over the trace-info JSON `j` must hold;
# prints the failing ones.
json() {
  local file=$1; shift
  python3 - "$file" "$@" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
ops = {o["op"]: o["calls"] for o in j["ops"]}
op_bytes = {o["op"]: o["bytes"] for o in j["ops"]}
bad = [e for e in sys.argv[2:] if not eval(e)]
for e in bad:
    print("   not true:", e, file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
}

# replay_all NAME TRACE CALLS BLOCKS: the replay under every allocator makes CALLS calls and
# checks BLOCKS blocks. A misaligned block is the allocator's bug (mimalloc 2.0.9 has one:
# microsoft/mimalloc#700), reported as a note; anything else fails.
replay_all() {
  local name=$1 trace=$2 calls=$3 blocks=$4 entry
  for entry in "${allocators[@]}"; do
    local allocator=${entry%%:*} lib=${entry#*:} status
    LD_PRELOAD=$lib build/replay --quiet "$trace" >"$work/replay.out" 2>"$work/replay.err"
    status=$?
    local result expect="calls=$calls .*verified=$blocks mismatches=0 "
    result=$(grep '^result ' "$work/replay.out")
    if [[ $status -eq 0 && $result =~ $expect ]]; then
      ok "$name replayed under $allocator: $calls calls, $blocks blocks checked"
    elif [[ $status -eq 1 && $result =~ $expect && $result =~ failures=0 ]]; then
      ok "$name replayed under $allocator: $calls calls, $blocks blocks checked"
      echo "note: $allocator returned misaligned blocks: $(head -1 "$work/replay.err")"
    else
      fail "$name replayed under $allocator (status $status): $result"
      head -5 "$work/replay.err"
    fi
  done
}

gcc -O1 -fno-builtin -Wall -Wextra -o "$work/sample" tests/programs/trace_sample.c
gcc -O1 -fno-builtin -pthread -Wall -Wextra -o "$work/threads" tests/programs/trace_threads.c

# ---- a known program: exact contents --------------------------------------------------------
if "${mapalloc[@]}" record -o "$work/sample.trace" -- "$work/sample" 2>"$work/record.log" &&
   [[ -s $work/sample.trace ]]; then
  ok "record: the sample program traced ($(stat -c %s "$work/sample.trace") bytes)"
else
  fail "record of the sample program"; cat "$work/record.log"
fi
"${mapalloc[@]}" trace-info --json "$work/sample.trace" >"$work/sample.json" 2>&1
if json "$work/sample.json" 'j["complete"] and j["calls"] == 391 and len(j["threads"]) == 1' \
    'ops == {"malloc": 103, "calloc": 50, "realloc": 21, "reallocarray": 2, "free": 171,
             "posix_memalign": 10, "aligned_alloc": 5, "memalign": 5, "valloc": 2,
             "pvalloc": 1, "malloc_usable_size": 3, "new": 4, "new[]": 3, "new(align)": 2,
             "delete(sized)": 4, "delete[]": 3, "delete(align)": 2}'; then
  ok "trace-info: calls per operation exactly as made"
else
  fail "trace-info: calls per operation"
fi
if json "$work/sample.json" \
    'op_bytes["malloc"] == sum(8 * i + 1 for i in range(100)) + 2 * (3 << 20) + 33' \
    'op_bytes["calloc"] == 24 * sum(range(1, 51))' \
    'op_bytes["realloc"] == sum(2 * (8 * i + 1) for i in range(20))' \
    'op_bytes["reallocarray"] == 800 and op_bytes["posix_memalign"] == 1000' \
    'op_bytes["aligned_alloc"] == 2560 and op_bytes["memalign"] == 5000' \
    'op_bytes["valloc"] == 10000 and op_bytes["pvalloc"] == 100' \
    'op_bytes["new"] == 160 and op_bytes["new[]"] == 240 and op_bytes["new(align)"] == 512' \
    '{(b["min"], b["max"]): b["count"] for b in j["size_histogram"]}[(2097153, 4194304)] == 2'
then
  ok "trace-info: requested sizes exact (per operation, and the 3 MiB blocks' bucket)"
else
  fail "trace-info: requested sizes"
fi
if json "$work/sample.json" 'j["allocations"] == 207 and j["frees"] == 200' \
    'j["never_freed"] == 7 and j["live_at_end_bytes"] == 2 * (3 << 20) + sum(8 * i + 1 for i in range(95, 100))' \
    'j["unknown_refs"] == 0 and sum(b["count"] for b in j["lifetime_histogram"]) == 200'; then
  ok "trace-info: 207 blocks, 200 freed, 7 never freed, lifetimes of all 200"
else
  fail "trace-info: block counts"
fi
replay_all "sample" "$work/sample.trace" 391 207

# ---- threads: frees and reallocs of other threads' blocks, thread exit, fork ----------------
"${mapalloc[@]}" record -o "$work/threads.trace" -- "$work/threads" 2>"$work/record.log"
status=$?
"${mapalloc[@]}" trace-info --json "$work/threads.trace" >"$work/threads.json" 2>&1
if [[ $status -eq 0 ]] && json "$work/threads.json" 'j["complete"] and len(j["threads"]) >= 29' \
    'ops["malloc"] >= 8000 + 3000 + 200 and ops["realloc"] >= 790' \
    'j["frees"] == j["allocations"] - j["never_freed"] and j["unknown_refs"] == 0' \
    'ops["malloc_usable_size"] == 1'; then
  ok "threads: 29 threads recorded, every cross-thread free matched to its block"
else
  fail "threads: record (status $status)"; cat "$work/record.log"
fi
if compgen -G "$work/threads.trace.*" >/dev/null; then
  fail "threads: the fork child wrote a trace"
else
  ok "threads: the fork child is not traced"
fi
calls=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["calls"])' "$work/threads.json")
blocks=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["allocations"])' "$work/threads.json")
replay_all "threads" "$work/threads.trace" "$calls" "$blocks"

# ---- an exec'd child writes FILE.<pid>; a killed program leaves a readable trace --------------
"${mapalloc[@]}" record -o "$work/shell.trace" -- sh -c "$work/sample; exit 0" 2>/dev/null
child=$(ls "$work"/shell.trace.* 2>/dev/null | head -1)
if [[ -n $child ]] && "${mapalloc[@]}" trace-info --json "$child" >"$work/child.json" 2>&1 &&
   json "$work/child.json" 'j["calls"] == 391 and j["child_process"]' \
     'j["program"].endswith("/sample")'; then
  ok "exec'd child: its calls in $(basename "$child")"
else
  fail "exec'd child: no complete FILE.<pid> trace"
fi
"${mapalloc[@]}" record -o "$work/killed.trace" -- /usr/bin/env PYTHONMALLOC=malloc python3 -c '
import os, signal
data = [str(i) * 3 for i in range(300000)]
os.kill(os.getpid(), signal.SIGKILL)' 2>/dev/null
"${mapalloc[@]}" trace-info --json "$work/killed.trace" >"$work/killed.json" 2>"$work/killed.err"
if json "$work/killed.json" 'not j["complete"] and j["calls"] > 100000' &&
   build/replay --quiet "$work/killed.trace" >/dev/null 2>&1; then
  ok "killed program: trace readable up to the last flush, and replays"
else
  fail "killed program's trace"; cat "$work/killed.err"
fi

# ---- the traced program in hard cases: it must run on as it would untraced ------------------
cat >"$work/edge.c" <<'EOF'
/* Edge cases of tracing inside a program (tests/trace_test.sh): each mode must end normally. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

static volatile sig_atomic_t ticks;
static void* block;
/* Traced calls that leave the allocator's state alone (malloc itself is not async-signal-safe,
 * in mapalloc or glibc), from a handler that most likely interrupts the tracer. */
static void call_in_handler(int sig) {
  (void)sig;
  if (malloc_usable_size(block) < 100) abort();
  free(NULL);
  ++ticks;
}
static void exit_in_handler(int sig) { (void)sig; exit(0); }
static void churn(long n) {
  void* keep[64] = {0};
  for (long i = 0; i < n; ++i) {
    free(keep[i % 64]);
    keep[i % 64] = malloc(16 + i % 300);
  }
  for (int i = 0; i < 64; ++i) free(keep[i]);
}
static void* failing_dlopen(void* arg) {  /* leaves a dlerror message, freed at thread exit */
  (void)arg;
  if (dlopen("/nonexistent/libnothing.so", RTLD_NOW) != NULL) abort();
  return NULL;
}
static long vm_kib(void) {
  FILE* f = fopen("/proc/self/status", "r");
  char line[256];
  long kib = -1;
  while (f && fgets(line, sizeof line, f)) if (sscanf(line, "VmSize: %ld", &kib) == 1) break;
  if (f) fclose(f);
  return kib;
}

int main(int argc, char** argv) {
  const char* mode = argc > 1 ? argv[1] : "";
  struct itimerval every = {{0, 50}, {0, 50}};
  if (strcmp(mode, "signals") == 0) {  /* a handler that allocates, interrupting the tracer */
    block = malloc(100);
    signal(SIGALRM, call_in_handler);
    setitimer(ITIMER_REAL, &every, NULL);
    churn(3000000);
    setitimer(ITIMER_REAL, &(struct itimerval){{0, 0}, {0, 0}}, NULL);
    return ticks == 0;
  }
  if (strcmp(mode, "exit") == 0) {  /* exit() from a handler, most likely inside the tracer */
    signal(SIGALRM, exit_in_handler);
    setitimer(ITIMER_REAL, &(struct itimerval){{0, 0}, {0, 20000}}, NULL);
    for (;;) churn(1000);
  }
  if (strcmp(mode, "threads") == 0) {  /* calls after each thread's key destructors */
    long before = 0;
    for (int i = 0; i < 1500; ++i) {
      pthread_t t;
      if (i == 50) before = vm_kib();
      if (pthread_create(&t, NULL, failing_dlopen, NULL) != 0) return 2;
      pthread_join(t, NULL);
    }
    long grown = vm_kib() - before;
    printf("%ld\n", grown);
    return grown > 64 * 1024;  /* 1450 threads: a leaked tracer buffer each would be 370 MiB */
  }
  if (strcmp(mode, "fill") == 0) {  /* a trace far beyond the file size limit */
    churn(2000000);
    return 0;
  }
  return 2;
}
EOF
gcc -O1 -fno-builtin -pthread -Wall -Wextra -o "$work/edge" "$work/edge.c" -ldl
traced() {  # traced NAME ARGS...: runs edge ARGS... traced into NAME.trace (20 s at most)
  local name=$1; shift
  timeout 20 env LD_PRELOAD="$PWD/build/libmapalloc-trace.so" \
    MAPALLOC_TRACE_FILE="$work/$name.trace" "$work/edge" "$@"
}
readable() {  # readable NAME: trace-info and replay --check accept NAME.trace
  build/trace-info "$work/$1.trace" >"$work/$1.json" 2>"$work/$1.err" &&
    build/replay --check "$work/$1.trace" >/dev/null 2>>"$work/$1.err"
}
traced signals signals 2>"$work/signals.log"
status=$?
if [[ $status -eq 0 ]] && readable signals && json "$work/signals.json" 'j["complete"]' \
    'ops["malloc_usable_size"] > 0 and ops["malloc"] == 3000001'; then
  ok "a signal handler's calls while the tracer is busy: no deadlock, the trace in order"
else
  fail "signal handler calling the allocator (status $status)"; cat "$work/signals.log" "$work/signals.err"
fi
hangs=0
for run in 1 2 3; do
  traced exit exit 2>/dev/null || hangs=$((hangs + 1))
  readable exit || hangs=$((hangs + 1))
done
if [[ $hangs -eq 0 ]]; then
  ok "exit() from a signal handler that interrupted the tracer: exits, trace readable (3 runs)"
else
  fail "exit() from a signal handler: $hangs of 3 runs hung or left a bad trace"; cat "$work/exit.err"
fi
grown=$(traced threads threads 2>"$work/threads-edge.log")
status=$?
if [[ $status -eq 0 ]] && readable threads && json "$work/threads.json" \
    'len(j["threads"]) == 1501 and j["unknown_refs"] == 0'; then
  ok "calls after a thread's key destructors: recorded, no buffer leaked (${grown:-?} KiB grown)"
else
  fail "calls after thread exit (status $status, ${grown:-?} KiB grown)"; cat "$work/threads.err"
fi
( ulimit -v 2000000; build/replay --quiet "$work/threads.trace" ) >/dev/null 2>"$work/spawn.err"
status=$?
if [[ $status -eq 2 ]] && grep -q "cannot start the trace's 1501 threads" "$work/spawn.err"; then
  ok "replay that cannot start every thread: one clear error, status 2"
else
  fail "replay that cannot start every thread (status $status): $(head -1 "$work/spawn.err")"
fi
( ulimit -f 1024; traced fill fill ) 2>"$work/fill.log"
status=$?
if [[ $status -eq 0 ]] && grep -q "file size limit" "$work/fill.log" && readable fill &&
    json "$work/fill.json" 'not j["complete"] and j["calls"] > 0'; then
  ok "trace file past RLIMIT_FSIZE: tracing stops, the program runs on, the trace is readable"
else
  fail "trace file past RLIMIT_FSIZE (status $status)"; cat "$work/fill.log" "$work/fill.err"
fi
"${mapalloc[@]}" record -o "$work/none.trace" -- /bin/true 2>"$work/none.log"
status=$?
if [[ $status -eq 0 ]] && readable none && json "$work/none.json" 'j["complete"]' \
    'j["calls"] == 0'; then
  ok "a program that never allocates: an empty, complete trace"
else
  fail "record of a program that never allocates (status $status)"; cat "$work/none.log"
fi
timeout 20 env LD_PRELOAD="$PWD/build/libmapalloc-trace.so" \
  MAPALLOC_TRACE_FILE="$work/no/such/dir.trace" "$work/edge" fill 2>"$work/noopen.log"
status=$?
if [[ $status -eq 0 ]] && grep -q "cannot open" "$work/noopen.log"; then
  ok "trace file that cannot be opened: one line on stderr, the program runs untraced"
else
  fail "trace file that cannot be opened (status $status)"; cat "$work/noopen.log"
fi

# ---- bad traces: a clear error with the byte offset, status 2, never a crash ------------------
python3 - "$work/sample.trace" "$work" <<'EOF'
import sys
data, out = open(sys.argv[1], "rb").read(), sys.argv[2]
header = int.from_bytes(data[10:12], "little")
def write(name, content): open(f"{out}/{name}.trace", "wb").write(content)
def checksum(payload):  # as src/trace/trace.h, so that the decoder itself must find the damage
    M = (1 << 64) - 1
    h = (0x9e3779b97f4a7c15 ^ len(payload)) & M
    for i in range(0, len(payload), 8):
        h = ((h ^ int.from_bytes(payload[i:i + 8].ljust(8, b"\0"), "little")) * 0xff51afd7ed558ccd) & M
        h ^= h >> 32
    return (h ^ (h >> 32)) & 0xffffffff
write("truncated", data[:len(data) - 100])
write("magic", b"NOTTRACE" + data[8:])
write("version", data[:8] + (7).to_bytes(2, "little") + data[10:])
damaged = bytearray(data); damaged[header + 32] ^= 0x55  # the first chunk's checksum
write("checksum", bytes(damaged))
payload = int.from_bytes(data[header + 8:header + 12], "little")
record = bytearray(data); record[header + 40] = 0x0c  # an operation code that does not exist
record[header + 32:header + 36] = checksum(bytes(record[header + 40:header + 40 + payload])).to_bytes(4, "little")
write("record", bytes(record))
seq = bytearray(data); seq[header + 16:header + 24] = (2**62).to_bytes(8, "little")
write("seq", bytes(seq))  # (the chunk header is outside the checksum)
EOF
for bad in truncated:truncated magic:"not a mapalloc trace" version:"unsupported trace version 7" \
           checksum:"checksum mismatch" record:"unknown operation code 12" \
           seq:"sequence number out of range"; do
  name=${bad%%:*} expect=${bad#*:}
  for tool in replay trace-info; do
    build/$tool "$work/$name.trace" >/dev/null 2>"$work/bad.err"
    status=$?
    if [[ $status -eq 2 ]] && grep -q "byte [0-9]*: .*$expect" "$work/bad.err"; then
      ok "bad trace ($name) rejected by $tool: $(cut -c1-90 "$work/bad.err" | head -1)"
    else
      fail "bad trace ($name) under $tool: status $status: $(head -1 "$work/bad.err")"
    fi
  done
done
if "${mapalloc[@]}" replay "$work/version.trace" >/dev/null 2>"$work/bad.err"; then
  fail "mapalloc replay accepted a bad trace"
elif grep -q "byte 8" "$work/bad.err"; then
  ok "mapalloc replay: a bad trace is one clear error"
else
  fail "mapalloc replay of a bad trace: $(head -2 "$work/bad.err")"
fi

# ---- the comparison command, end to end -------------------------------------------------------
if "${mapalloc[@]}" replay "$work/threads.trace" --runs 1 --allocator glibc,mapalloc \
     --chart "$work/replay.png" >"$work/compare.out" 2>&1 &&
   grep -q "^replay time" "$work/compare.out" && grep -q "peak RSS" "$work/compare.out" &&
   [[ -s $work/replay.png || -z $(command -v gnuplot) ]]; then
  ok "mapalloc replay: time, peak RSS and calls per allocator, and a chart"
else
  fail "mapalloc replay"; tail -20 "$work/compare.out"
fi
if "${mapalloc[@]}" trace-info "$work/threads.trace" -o "$work/info.png" >"$work/info.out" 2>&1 &&
   grep -q "^block sizes" "$work/info.out" && grep -q "^block lifetimes" "$work/info.out" &&
   [[ -s $work/info.png || -z $(command -v gnuplot) ]]; then
  ok "mapalloc trace-info: text and chart"
else
  fail "mapalloc trace-info"; tail -20 "$work/info.out"
fi

# ---- what tracing costs (measured, not asserted) ----------------------------------------------
timed() {  # seconds of one run of "$@"
  local start end
  start=$(date +%s%N); "$@" >/dev/null 2>&1; end=$(date +%s%N)
  echo $(((end - start) / 1000))
}
plain=() traced=()
for run in 1 2 3; do
  plain+=("$(timed env LD_PRELOAD="$PWD/build/libmapalloc.so" PYTHONMALLOC=malloc \
    /usr/bin/python3 scripts/bench/python_workload.py 1)")
  traced+=("$(timed env LD_PRELOAD="$PWD/build/libmapalloc-trace.so" PYTHONMALLOC=malloc \
    MAPALLOC_TRACE_FILE="$work/cost.trace" /usr/bin/python3 scripts/bench/python_workload.py 1)")
done
median() { printf '%s\n' "$@" | sort -n | sed -n 2p; }
echo "note: traced run slowdown, python3 (PYTHONMALLOC=malloc) benchmark workload:" \
  "$(median "${plain[@]}") us untraced, $(median "${traced[@]}") us traced," \
  "x$(python3 -c "print(round($(median "${traced[@]}") / $(median "${plain[@]}"), 2))")"
