#!/usr/bin/env bash
# Real programs from Debian packages with mapalloc preloaded; each one's output must equal that
# of a run without it. They allocate in their own ways (CPython's arenas and realloc'ed dicts,
# GCC's obstacks and garbage collector, SQLite's page cache, Perl's and Lua's strings and hashes,
# Redis's event loop with jemalloc-style malloc_usable_size accounting) and so reach paths the
# synthetic stress programs do not.
#
#   stress/real_programs.sh [--quick]
#
#   python3   scripts/bench/python_workload.py --mode mixed (dicts, lists, strings, big ints, json)
#   g++       -O2 -S of a generated file with hundreds of template instantiations
#   sqlite3   inserts, indexes, updates, deletes, group-by queries, integrity check
#   perl      hash and string churn
#   lua5.4    table and string churn
#   redis     redis-server (preloaded) on a free port on 127.0.0.1: redis-cli SET/GET checks,
#             redis-benchmark -q, SHUTDOWN NOSAVE; it must exit cleanly
#
# Prints "ok <program>" or "FAIL <program>: reason" per program; exit status 1 if any failed.
# Missing packages are installed with apt-get (through sudo when not root). --quick: small
# inputs (well under 40 s). $MAPALLOC_BUILD overrides the build directory (default build/).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
lib=${MAPALLOC_BUILD:-$root/build}/libmapalloc.so

quick=0
case ${1-} in
  --quick) quick=1 ;;
  "") ;;
  -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "real_programs.sh: unknown argument $1" >&2; exit 2 ;;
esac

if [[ ! -f $lib ]]; then
  make -C "$root" >/dev/null || { echo "FAIL build: make failed"; exit 1; }
fi
if ! LD_PRELOAD=$lib cat /proc/self/maps 2>/dev/null | grep -q libmapalloc; then
  echo "FAIL preload: $lib is not loaded by LD_PRELOAD"; exit 1
fi

# ---- packages ----------------------------------------------------------------------------------
need=()
for pair in /usr/bin/python3:python3 g++:g++ sqlite3:sqlite3 perl:perl lua5.4:lua5.4 \
            redis-server:redis-server redis-cli:redis-tools redis-benchmark:redis-tools; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [[ ${#need[@]} -gt 0 ]]; then
  sudo=()
  [[ $(id -u) -ne 0 ]] && sudo=(sudo)
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  echo "installing: ${need[*]}"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}" >/dev/null 2>&1 ||
    { "${sudo[@]}" apt-get update >/dev/null 2>&1 &&
      "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}" >/dev/null 2>&1; } ||
    echo "warning: apt-get install ${need[*]} failed"
fi

tmp=$(mktemp -d)
redis_pid=
cleanup() {
  [[ -n $redis_pid ]] && kill "$redis_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
failed=0
fail() { echo "FAIL $1: $2"; failed=$((failed + 1)); }

# compare NAME CMD...: runs CMD without and with mapalloc, outputs (stdout+stderr) must match.
compare() {
  local name=$1; shift
  local t0=$SECONDS
  timeout 300 "$@" >"$tmp/$name.plain" 2>&1
  local rc1=$?
  LD_PRELOAD=$lib timeout 300 "$@" >"$tmp/$name.mapalloc" 2>&1
  local rc2=$?
  if ! command -v "$1" >/dev/null 2>&1; then
    fail "$name" "$1 not installed"
  elif [[ $rc1 -ne 0 ]]; then
    fail "$name" "exit $rc1 even without mapalloc: $(tail -2 "$tmp/$name.plain" | tr '\n' ' ')"
  elif [[ $rc2 -ne 0 ]]; then
    fail "$name" "exit $rc2 with mapalloc: $(tail -3 "$tmp/$name.mapalloc" | tr '\n' ' ')"
  elif ! cmp -s "$tmp/$name.plain" "$tmp/$name.mapalloc"; then
    fail "$name" "output differs with mapalloc: $(diff "$tmp/$name.plain" "$tmp/$name.mapalloc" | head -4 | tr '\n' ' ')"
  else
    echo "ok $name ($((SECONDS - t0)) s, $(wc -c <"$tmp/$name.plain") bytes of output)"
  fi
}

# ---- python3 -----------------------------------------------------------------------------------
compare python3 /usr/bin/python3 "$root/scripts/bench/python_workload.py" --mode mixed \
  "$([[ $quick -eq 1 ]] && echo 0.3 || echo 2)"

# ---- g++ ---------------------------------------------------------------------------------------
modules=$([[ $quick -eq 1 ]] && echo 16 || echo 100)
{
  echo '#include <algorithm>'
  echo '#include <functional>'
  echo '#include <map>'
  echo '#include <memory>'
  echo '#include <set>'
  echo '#include <sstream>'
  echo '#include <string>'
  echo '#include <tuple>'
  echo '#include <unordered_map>'
  echo '#include <variant>'
  echo '#include <vector>'
  echo 'template <int N> struct Fib { static constexpr long value = Fib<N - 1>::value + Fib<N - 2>::value; };'
  echo 'template <> struct Fib<0> { static constexpr long value = 0; };'
  echo 'template <> struct Fib<1> { static constexpr long value = 1; };'
  echo 'template <typename T, int D> struct Nest { using type = std::vector<typename Nest<T, D - 1>::type>; };'
  echo 'template <typename T> struct Nest<T, 0> { using type = T; };'
  for ((i = 0; i < modules; i++)); do
    cat <<EOF
namespace m$i {
struct S { int a; std::string s; std::vector<double> v; long f = Fib<$((i % 60 + 10))>::value;
  bool operator<(const S& o) const { return std::tie(a, s) < std::tie(o.a, o.s); } };
using V = std::variant<int, std::string, S>;
std::map<std::string, std::vector<S>> build(int n) {
  std::map<std::string, std::vector<S>> out;
  std::unordered_map<int, std::shared_ptr<S>> cache;
  std::function<int(int)> g = [&](int x) { return x < 2 ? x : g(x - 1) + $i; };
  Nest<S, $((i % 4 + 1))>::type nested{};
  for (int k = 0; k < n; ++k) {
    std::ostringstream key; key << "k" << k % $((i + 3)) << "-" << g(k % 5);
    auto p = std::make_shared<S>(S{k, key.str(), std::vector<double>(k % 7, 1.5 * $i)});
    cache[k] = p; out[key.str()].push_back(*p);
  }
  for (auto& [k, v] : out) { std::sort(v.begin(), v.end()); v.erase(std::unique(v.begin(), v.end(),
    [](const S& x, const S& y) { return x.a == y.a; }), v.end()); }
  std::set<V, std::function<bool(const V&, const V&)>> vs([](const V& x, const V& y) { return x.index() < y.index(); });
  vs.insert(V{$i}); vs.insert(V{std::string("s$i")});
  return out;
}
}  // namespace m$i
EOF
  done
  echo 'int main() { long t = 0;'
  for ((i = 0; i < modules; i++)); do echo "  t += m$i::build($((i % 10 + 5))).size();"; done
  echo '  return int(t % 7); }'
} >"$tmp/big.cpp"
compare g++ g++ -std=c++17 -O2 -S -o - "$tmp/big.cpp"

# ---- sqlite3 -----------------------------------------------------------------------------------
rows=$([[ $quick -eq 1 ]] && echo 30000 || echo 400000)
cat >"$tmp/db.sql" <<EOF
PRAGMA cache_size = -32000;
CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v INTEGER, pad TEXT);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < $rows)
INSERT INTO t SELECT x, printf('key%08d', (x * 7919) % $rows), (x * 31) % 1000,
  substr(printf('%.*c', x % 300, 'z'), 1) FROM c;
CREATE INDEX t_k ON t(k);
CREATE INDEX t_vk ON t(v, k);
SELECT count(*), sum(v), min(k), max(k), sum(length(pad)) FROM t;
SELECT v, count(*), sum(id) FROM t GROUP BY v ORDER BY v LIMIT 10;
UPDATE t SET k = k || '-u', pad = pad || pad WHERE id % 3 = 0;
DELETE FROM t WHERE id % 5 = 0;
SELECT count(*), sum(length(k)), sum(length(pad)) FROM t;
CREATE TABLE u AS SELECT v, group_concat(k, ',') AS g FROM (SELECT v, k FROM t ORDER BY v, k) GROUP BY v;
SELECT count(*), sum(length(g)) FROM u;
SELECT k FROM t WHERE k > 'key00005000' ORDER BY k LIMIT 5;
SELECT a.v, count(*) FROM t a JOIN u b ON a.v = b.v WHERE a.id % 97 = 0 GROUP BY a.v ORDER BY 2 DESC, 1 LIMIT 5;
VACUUM;
PRAGMA integrity_check;
EOF
# a fresh database file for each run
compare sqlite3 bash -c 'rm -f "$1" && exec sqlite3 "$1" -init /dev/null -batch ".read $2"' \
  sqlite3 "$tmp/db.sqlite" "$tmp/db.sql"

# ---- perl --------------------------------------------------------------------------------------
n=$([[ $quick -eq 1 ]] && echo 100000 || echo 1000000)
cat >"$tmp/churn.pl" <<'EOF'
use strict; use warnings;
my $n = shift; my %h; my $s = ""; my @keep;
for my $i (1 .. $n) {
  my $k = "key" . ($i * 7919 % $n);
  $h{$k} .= "x" x ($i % 50);
  $s .= chr(65 + $i % 26);
  $s = reverse substr($s, 0, 5000) if length($s) > 10000;
  delete $h{"key" . ($i * 31 % $n)} if $i % 7 == 0;
  push @keep, [$i, "v$i" x ($i % 5)] if $i % 3 == 0;
  splice(@keep, 0, 1000) if @keep > 20000;
}
my $t = 0; $t += length($h{$_}) for sort keys %h;
my @len = sort { $a <=> $b } map { length } values %h;
my @w = split /,/, join(",", map { "w$_" x ($_ % 10) } 1 .. $n / 10);
print scalar(keys %h), " $t ", length($s), " $len[0] $len[-1] ", scalar(@keep), " ", scalar(@w), "\n";
EOF
compare perl perl "$tmp/churn.pl" "$n"

# ---- lua5.4 ------------------------------------------------------------------------------------
cat >"$tmp/churn.lua" <<'EOF'
local n = tonumber(arg[1])
local t = {}
for i = 1, n do
  local k = "k" .. (i * 7919 % n)
  t[k] = (t[k] or "") .. string.rep("y", i % 40)
  if i % 7 == 0 then t["k" .. (i * 31 % n)] = nil end
end
local cnt, len = 0, 0
for _, v in pairs(t) do cnt = cnt + 1; len = len + #v end
local parts = {}
for i = 1, n do parts[#parts + 1] = tostring(i * i) end
local s = table.concat(parts, ",")
local words = 0
for _ in s:gmatch("[^,]+") do words = words + 1 end
local arr = {}
for i = 1, n // 10 do arr[i] = { i, tostring(i):rep(i % 7) } end
table.sort(arr, function(a, b) return a[2] < b[2] or (a[2] == b[2] and a[1] < b[1]) end)
collectgarbage()
print(cnt, len, #s, words, arr[1][1], arr[#arr][1])
EOF
compare lua5.4 lua5.4 "$tmp/churn.lua" "$n"

# ---- redis -------------------------------------------------------------------------------------
redis_check() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null &&
    command -v redis-benchmark >/dev/null || { fail redis "redis-server/redis-tools not installed"; return; }
  local t0=$SECONDS port
  port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  LD_PRELOAD=$lib redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize no --dir "$tmp" --logfile "$tmp/redis.log" &
  redis_pid=$!
  local cli=(redis-cli -h 127.0.0.1 -p "$port")
  for _ in $(seq 100); do
    [[ $("${cli[@]}" ping 2>/dev/null) == PONG ]] && break
    sleep 0.1
  done
  [[ $("${cli[@]}" ping 2>/dev/null) == PONG ]] || { fail redis "server did not start: $(tail -3 "$tmp/redis.log" | tr '\n' ' ')"; return; }
  grep -q libmapalloc "/proc/$redis_pid/maps" || { fail redis "libmapalloc not mapped in redis-server"; return; }
  local out
  out=$("${cli[@]}" set greeting hello && "${cli[@]}" get greeting && "${cli[@]}" incrby counter 41 &&
        "${cli[@]}" incr counter && "${cli[@]}" rpush list a b c d && "${cli[@]}" lrange list 1 2)
  [[ $(tr '\n' ' ' <<<"$out") == "OK hello 41 42 4 b c " ]] || { fail redis "SET/GET checks gave: $(tr '\n' ' ' <<<"$out")"; return; }
  head -c 3000000 /dev/zero | tr '\0' 'q' >"$tmp/big.val"
  "${cli[@]}" -x set big <"$tmp/big.val" >/dev/null
  [[ $("${cli[@]}" strlen big) == 3000000 ]] || { fail redis "3 MB value has the wrong length"; return; }
  [[ $("${cli[@]}" --no-raw getrange big 2999990 -1) == '"qqqqqqqqqq"' ]] || { fail redis "3 MB value corrupted"; return; }
  local n
  n=$([[ $quick -eq 1 ]] && echo 5000 || echo 100000)
  if ! redis-benchmark -h 127.0.0.1 -p "$port" -q -n "$n" -c 20 -d 200 -r 10000 \
      -t set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,lrange_100 >"$tmp/bench.out" 2>&1 ||
     [[ $(tr '\r' '\n' <"$tmp/bench.out" | grep -c 'requests per second') -lt 10 ]]; then
    fail redis "redis-benchmark: $(tail -3 "$tmp/bench.out" | tr '\n' ' ')"; return
  fi
  [[ $("${cli[@]}" get greeting) == hello && $("${cli[@]}" strlen big) == 3000000 ]] ||
    { fail redis "keys lost after the benchmark"; return; }
  "${cli[@]}" shutdown nosave >/dev/null 2>&1
  local rc=0
  wait "$redis_pid" || rc=$?
  redis_pid=
  [[ $rc -eq 0 ]] || { fail redis "redis-server exited with status $rc: $(tail -3 "$tmp/redis.log" | tr '\n' ' ')"; return; }
  grep -qiE 'crash|bug report|segmentation' "$tmp/redis.log" && { fail redis "crash report in the log"; return; }
  echo "ok redis ($((SECONDS - t0)) s; $(tr '\r' '\n' <"$tmp/bench.out" | grep -c 'requests per second') benchmark tests," \
    "$(tr '\r' '\n' <"$tmp/bench.out" | grep -m1 -E '^SET: [0-9.]+ requests per second' | cut -d, -f1))"
}
redis_check

[[ $failed -eq 0 ]] || { echo "$failed real program check(s) failed"; exit 1; }
exit 0
