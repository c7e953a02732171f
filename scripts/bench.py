#!/usr/bin/env python3
"""mapalloc's benchmark driver (make bench, make bench-quick).

Runs every workload under every allocator via LD_PRELOAD, alternating allocators run by run
(A B C D A B C D ...), and reports the median wall time, peak RSS and minor page faults of
each, with ratios to mapalloc. Writes build/bench/results.{csv,md,json} and
build/bench/chart.png, and compares mapalloc's standing with the previous run of the same mode.

Only the Python standard library is used; the chart is drawn by gnuplot.
"""
import argparse
import collections
import csv
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "bench"
LIBDIR = Path("/usr/lib/x86_64-linux-gnu")

# name -> library to preload (None: the C library's own malloc), Debian package
ALLOCATORS = {
    "mapalloc": (ROOT / "build" / "libmapalloc.so", None),
    # mapalloc's secure build, and a build without the double-free key: what hardening costs.
    "mapalloc-secure": (ROOT / "build" / "libmapalloc-secure.so", None),
    "mapalloc-unchecked": (ROOT / "build" / "libmapalloc-unchecked.so", None),
    "glibc": (None, None),
    "jemalloc": (LIBDIR / "libjemalloc.so.2", "libjemalloc2"),
    "mimalloc": (LIBDIR / "libmimalloc.so.2", "libmimalloc2.0"),
    "tcmalloc": (LIBDIR / "libtcmalloc_minimal.so.4", "libtcmalloc-minimal4"),
}


class Workload:
    """One row of the tables: `argv` run with `stdin` (a file; default /dev/null) and the
    variables of `env` added to the environment; kind "synthetic" or "real" (the summaries
    treat them apart); `server`: not None for redis, the number of requests (argv unused)."""

    def __init__(self, name, argv, kind="synthetic", stdin=None, server=None, env=None):
        self.name, self.argv, self.kind, self.stdin, self.server = name, argv, kind, stdin, server
        self.env = env or {}


def progress(text):
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K" + text)
    else:
        sys.stderr.write(text + "\n")
    sys.stderr.flush()


def environment(preload):
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if preload is not None:
        env["LD_PRELOAD"] = str(preload)
    # A run with mapalloc's heap profiler on (--env NAME:MAPALLOC_PROF=1) writes its profiles at
    # exit: into the benchmark's folder, not the one make bench was started from.
    env.setdefault("MAPALLOC_PROF_FILE", str(OUT / "profiles" / "mapalloc.%p"))
    return env


# One run measured by `measure` (see measure.c). user/sys_seconds: CPU time (None from an older
# measure that reports only wall time and peak RSS); status: the command's exit status (128 + N
# for signal N); stdout, stderr: the command's output (bytes; None when not captured);
# minor_faults: minor page faults of the command and its waited-for children (None from an
# older measure).
Measurement = collections.namedtuple(
    "Measurement", "seconds peak_kib user_seconds sys_seconds status stdout stderr minor_faults",
    defaults=[None])


def parse_report(line):
    """measure's report line "SECONDS PEAK_RSS_KIB [USER SYS [MINOR_FAULTS]]" -> (seconds, peak
    KiB, user seconds, sys seconds, minor faults); None for the fields a shorter line (an older
    measure's) lacks. ValueError if malformed."""
    fields = line.split()
    if len(fields) < 2:
        raise ValueError(f"not a measure report: {line!r}")
    user, sys_ = (float(fields[2]), float(fields[3])) if len(fields) >= 4 else (None, None)
    faults = int(fields[4]) if len(fields) >= 5 else None
    return float(fields[0]), int(fields[1]), user, sys_, faults


def measure_process(argv, preload, stdin_path=None, measure_tool=None, env=None):
    """Runs argv to completion through the `measure` wrapper with `preload` (a library path, or
    None for none) in LD_PRELOAD, capturing its output; returns a Measurement. A command that
    fails is reported through `status`, not raised; RuntimeError only if measure itself fails.
    measure_tool: the wrapper's path (default: the benchmark's build/bench/measure); env: the
    environment for the command (default: this process's, without LD_PRELOAD)."""
    with open(stdin_path, "rb") if stdin_path else open(os.devnull, "rb") as stdin:
        result = subprocess.run(measure_command(argv, preload, measure_tool), stdin=stdin,
                                capture_output=True,
                                env=environment(None) if env is None else env)
    try:
        output, report = split_report(result.stderr)
    except ValueError:
        raise RuntimeError(f"{' '.join(map(str, argv))}: measure failed ({result.returncode}): "
                           f"{result.stderr[-500:].decode(errors='replace')}") from None
    seconds, peak_kib, user, sys_, faults = report
    return Measurement(seconds, peak_kib, user, sys_, result.returncode, result.stdout, output,
                       faults)


# MiB of huge-page memory touched and freed before every measured run (measure --prime-mib; 0:
# none): on the benchmark VM a run's time at times depended on which allocator's process ran
# just before it, and priming removed that (measure.c says more). --prime-mib sets it.
PRIME_MIB = 1024


def prime_memory(measure_tool=None):
    """Leaves PRIME_MIB MiB of warm free memory for the next run (best effort; at most a
    quarter of the memory available, on a small machine)."""
    mib = PRIME_MIB
    try:
        with open("/proc/meminfo") as meminfo:
            available_kib = next(int(line.split()[1]) for line in meminfo
                                 if line.startswith("MemAvailable:"))
        mib = min(mib, available_kib // 4096)
    except (OSError, StopIteration, ValueError):
        pass
    if mib > 0:
        subprocess.run([str(measure_tool or OUT / "measure"), "--prime-mib", str(mib), "--",
                        "true"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure_command(argv, preload, measure_tool=None):
    """The command line that runs argv through `measure` with `preload` (None: none)."""
    return ([str(measure_tool or OUT / "measure"), "--preload", str(preload or ""), "--"] +
            [str(a) for a in argv])


def split_report(stderr):
    """A measured run's stderr (bytes) -> (the command's own stderr, parse_report's fields).
    measure ends stderr with "\n" + report + "\n": the first newline is its own, not the
    command's. ValueError if there is no report."""
    body = stderr[:-1] if stderr.endswith(b"\n") else stderr
    cut = body.rfind(b"\n")
    return body[:max(cut, 0)], parse_report(body[cut + 1:].decode(errors="replace"))


def run_process(argv, preload, stdin_path=None, env=None):
    """Runs argv to completion through the `measure` wrapper (see measure.c) with `env` (default:
    this process's environment without LD_PRELOAD); returns its Measurement. A command that
    fails is an error."""
    run = measure_process(argv, preload, stdin_path, env=env)
    if run.status != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed ({run.status}): "
                           f"{run.stderr[-500:].decode(errors='replace')}")
    return run


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def process_minor_faults(pid):
    """Minor page faults of the running process `pid` so far (field 10 of /proc/PID/stat; the
    fields are counted after the command name, which may hold spaces, in parentheses)."""
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[7])


def run_redis(requests, preload):
    """redis-server preloaded with the allocator, driven by redis-benchmark (not preloaded).
    Time: the benchmark's wall time. Memory and page faults: the server's (peak RSS and minor
    faults read just before its shutdown). Returns a Measurement (no CPU times, no output)."""
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=environment(preload))
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.025)
        start = time.perf_counter()
        subprocess.run(["redis-benchmark", "-p", str(port), "-n", str(requests), "-q", "-r",
                        "100000", "-d", "200", "-t", "set,get,lpush,lpop,sadd,hset,mset"],
                       check=True, stdout=subprocess.DEVNULL, env=environment(None))
        seconds = time.perf_counter() - start
        with open(f"/proc/{server.pid}/status") as status:
            peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
        faults = process_minor_faults(server.pid)
        subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if server.wait(timeout=20) not in (0, None):
            raise RuntimeError("redis-server exited with an error")
        return Measurement(seconds, peak, None, None, 0, b"", b"", faults)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def build(quick):
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "profiles").mkdir(exist_ok=True)  # (see environment)
    cc = ["gcc", "-O2", "-pthread", "-Wall", "-Wextra"]
    for source in ("workloads", "fastpath", "measure"):
        subprocess.run(cc + ["-o", OUT / source, ROOT / "scripts" / "bench" / f"{source}.c"],
                       check=True)
    python = ["python3", str(ROOT / "scripts" / "bench" / "gen_sql.py")]
    with open(OUT / "bench.sql", "w") as sql:
        subprocess.run(python + ["60000" if quick else "300000"], stdout=sql, check=True)
    with open(OUT / "big.cpp", "w") as cpp:
        subprocess.run(["python3", str(ROOT / "scripts" / "bench" / "gen_cpp.py"),
                        "12" if quick else "40"], stdout=cpp, check=True)
    with open(OUT / "records.json", "w") as records:  # jq's input: 1.4 or 4.3 MB
        subprocess.run(["python3", str(ROOT / "scripts" / "bench" / "gen_json.py"),
                        "8000" if quick else "25000"], stdout=records, check=True)


def workloads(quick, only):
    scale = "1" if quick else "4"
    tool = str(OUT / "workloads")
    chosen = [Workload(f"{name}-{threads}t" if threads else name,
                       [tool, name, str(threads or 1), scale])
              for name, threads in [("lifo", 0), ("fifo", 0), ("linked", 0), ("bigblock", 0),
                                    ("larson", 1), ("larson", 2), ("larson", 8),
                                    ("prodcons", 2), ("prodcons", 8),
                                    ("churn", 1), ("churn", 2), ("churn", 8),
                                    ("bigbuffers", 0), ("xthread", 2), ("xthread", 8),
                                    ("cachethrash", 0), ("hashtable", 0)]]
    # churn-8t on a loaded machine: two more threads spin the whole time (workloads.c, BUSY).
    chosen.insert(12, Workload("churn-8t-busy2", [tool, "churn", "8", scale, "2"]))
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else "python3"
    bench_dir = ROOT / "scripts" / "bench"
    chosen.append(Workload("python3", [python, str(bench_dir / "python_workload.py"),
                                       "1" if quick else "4"], kind="real"))
    # Python with every object from malloc (not from pymalloc's arenas); a fixed hash seed so
    # that every run makes the same calls.
    chosen.append(Workload("python3-malloc", [python, str(bench_dir / "python_workload.py"),
                                              "--mode", "json", "1" if quick else "2"], kind="real",
                           env={"PYTHONMALLOC": "malloc", "PYTHONHASHSEED": "0"}))
    chosen.append(Workload("sqlite3", ["sqlite3", ":memory:"], kind="real",
                           stdin=OUT / "bench.sql"))
    chosen.append(Workload("g++ -O2", ["g++", "-std=c++17", "-O2", "-c", "-o", "/dev/null",
                                       str(OUT / "big.cpp")], kind="real"))
    interpreters = [("jq", ["jq", "-c", "-f", str(bench_dir / "jq_filters.jq"),
                            str(OUT / "records.json")]),
                    ("lua5.4", ["lua5.4", str(bench_dir / "lua_workload.lua"),
                                "1" if quick else "2"]),
                    ("perl", ["perl", str(bench_dir / "perl_workload.pl"), "1" if quick else "2"])]
    for name, argv in interpreters:
        if shutil.which(argv[0]):
            chosen.append(Workload(name, argv, kind="real"))
        elif not only or any(pattern in name for pattern in only):
            print(f"note: {argv[0]} is not installed (apt-get install {name}): no {name} row")
    if shutil.which("redis-server") and shutil.which("redis-benchmark"):
        chosen.append(Workload("redis", None, kind="real",
                               server=20000 if quick else 50000))
    if only:
        chosen = [w for w in chosen if any(pattern in w.name for pattern in only)]
    return chosen


def callgrind_pairs(preload, size):
    """Instructions per malloc/free pair on the fast-path loop (difference of two lengths)."""
    counts = []
    for iterations in (100000, 200000):
        env = environment(preload)
        result = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                                 str(OUT / "fastpath"), str(iterations), str(size)],
                                env=env, capture_output=True, text=True)
        line = [l for l in result.stderr.splitlines() if "Collected" in l]
        if not line:
            return None
        counts.append(int(line[-1].split()[-1]))
    return (counts[1] - counts[0]) / 100000


def geomean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


# What measure() keeps of each run: results key -> Measurement field.
RUN_FIELDS = {"seconds": "seconds", "rss_kib": "peak_kib", "minflt": "minor_faults"}


def measure(chosen, allocators, runs_of):
    """Runs every workload runs_of[its name] times under every allocator of `allocators`
    ({name: library to preload}), alternating; returns {workload: {allocator: {"seconds":
    [...], "rss_kib": [...], "minflt": [...], "median_seconds": ..., "median_rss_kib": ...,
    "median_minflt": ...}}}. RuntimeError if a run fails or prints other output than the
    workload's first run."""
    results = {w.name: {a: {key: [] for key in RUN_FIELDS} for a in allocators} for w in chosen}
    outputs = {}
    total = sum(runs_of.values()) * len(allocators)
    done = 0
    for workload in chosen:
        runs = runs_of[workload.name]
        names = list(allocators)
        for run in range(runs):
            # Alternate, and rotate who goes first (A B C, B C A, C A B, ...). Each run starts
            # with warm free memory (prime_memory): otherwise an allocator that follows one
            # using huge pages inherits warm memory and one that follows glibc or jemalloc does
            # not (churn-8t under mapalloc: 0.61 s against 1.15 s), and a fixed rotation always
            # puts the same allocator after the same one.
            shift = run % len(names)
            for allocator in names[shift:] + names[:shift]:
                done += 1
                progress(f"[{done}/{total}] {workload.name} under {allocator} "
                         f"(run {run + 1}/{runs})")
                preload = allocators[allocator]
                prime_memory()
                if workload.server:
                    result = run_redis(workload.server, preload)
                else:
                    env = dict(environment(None), **workload.env,
                               **ALLOCATOR_ENV.get(allocator, {}))
                    result = run_process(workload.argv, preload, workload.stdin, env)
                for key, field in RUN_FIELDS.items():
                    results[workload.name][allocator][key].append(getattr(result, field))
                previous = outputs.setdefault(workload.name, result.stdout)
                if result.stdout != previous:
                    raise RuntimeError(f"{workload.name}: output under {allocator} differs")
    progress("")
    for per_allocator in results.values():
        for entry in per_allocator.values():
            for key in RUN_FIELDS:
                entry["median_" + key] = statistics.median(entry[key])
    return results


def format_rss(kib):
    return f"{kib / 1024:.1f}M" if kib >= 1024 else f"{kib}K"


def format_cell(key, value, base=None):
    """A table cell: seconds ("1.234s") when `key` names seconds, a count ("12345") when it
    names page faults (minflt), else KiB shown as "12.3M"; given `base` (mapalloc's figure),
    followed by " xR", R = value / base."""
    if key.endswith("seconds"):
        text = f"{value:.3f}s"
    elif key.endswith("minflt"):
        text = f"{value:.0f}"
    else:
        text = format_rss(value)
    return text if not base else text + f" x{value / base:.2f}"


def table_rows(chosen, allocators, results, key, fastpath=None):
    """One table: a row per workload, a column per allocator; each cell the median of `key`
    and, for the others, 'xR' = R times mapalloc's figure."""
    header = ["workload"] + list(allocators)
    rows = []
    for workload in chosen:
        base = results[workload.name]["mapalloc"][key]
        row = [workload.name]
        for allocator in allocators:
            value = results[workload.name][allocator][key]
            row.append(format_cell(key, value, None if allocator == "mapalloc" else base))
        rows.append(row)
    if fastpath:
        rows.append(["instructions per malloc/free pair (callgrind)"] +
                    [f"{fastpath[a]:.1f}" if fastpath.get(a) else "n/a" for a in allocators])
    return header, rows


# mapalloc's own builds: not baselines (no "mapalloc/X" summary line; compared to mapalloc).
MAPALLOC_BUILDS = ("mapalloc", "mapalloc-secure", "mapalloc-unchecked")

# (label in the summary, results key) of the figures summarised per baseline.
SUMMARY_FIGURES = [("time", "median_seconds"), ("peak RSS", "median_rss_kib"),
                   ("minor faults", "median_minflt")]


def geomean_text(ratios):
    """'0.81 (worst 1.08 linked)': the geometric mean of {workload: ratio} and its largest."""
    worst = max(ratios, key=ratios.get)
    return f"{geomean(ratios.values()):.2f} (worst {ratios[worst]:.2f} {worst})"


def summary_lines(chosen, allocators, results, fastpath):
    """The summary under the tables: for every baseline (every allocator but mapalloc's
    builds, extra ones included), geometric means over the synthetic workloads and over the
    real programs of mapalloc's figure divided by the baseline's (below 1: mapalloc does
    better), with the worst workload; the cost of mapalloc's other builds; the fast path."""
    lines = []
    synthetic = [w.name for w in chosen if w.kind == "synthetic"]
    real = [w.name for w in chosen if w.kind == "real"]
    for other in allocators:
        if other in MAPALLOC_BUILDS:
            continue
        for label, names in (("synthetic", synthetic), ("real programs", real)):
            if not names:
                continue
            figures = []
            for title, key in SUMMARY_FIGURES:
                ratios = {n: results[n]["mapalloc"][key] / results[n][other][key] for n in names
                          if results[n][other][key]}
                if ratios:
                    figures.append(f"{title} geomean {geomean_text(ratios)}")
            lines.append(f"mapalloc/{other} ({label}): " + ", ".join(figures))
    for variant in ("mapalloc-secure", "mapalloc-unchecked"):
        if variant in allocators:
            ratios = {w.name: results[w.name][variant]["median_seconds"] /
                      results[w.name]["mapalloc"]["median_seconds"] for w in chosen}
            lines.append(f"{variant}/mapalloc: time geomean {geomean_text(ratios)}")
    if fastpath.get("mapalloc"):
        others = ", ".join(f"{a} {fastpath[a]:.1f}" for a in allocators
                           if a != "mapalloc" and fastpath.get(a))
        lines.append(f"fast path: {fastpath['mapalloc']:.1f} instructions per malloc/free pair "
                     f"(loop included; {others})")
    return lines


def render_text(header, rows):
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


def render_markdown(tables, summary):
    out = []
    for title, (header, rows) in tables:
        out += [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        out.append("")
    return "\n".join(out) + "\n".join(f"- {line}" for line in summary) + "\n"


def gnuplot_histograms(path, width, height, clustered=True):
    """The start of a gnuplot script drawing bar charts into the PNG `path` (shared by the
    benchmark chart and the trace charts)."""
    cluster = "set style histogram clustered gap 1\n" if clustered else ""
    return (f"set terminal pngcairo size {width},{height} font ',10'\nset output '{path}'\n"
            f"set style data histograms\n{cluster}set style fill solid 0.8 border -1\n")


def gnuplot_panels(data, allocators, title, ylabels):
    """The end of a gnuplot script: a bar chart per y label, one above the other, of data sets
    (`index`) 0, 1, ... of the file `data`, a bar per allocator in each group (the benchmark
    chart and replay's chart)."""
    plots = ", ".join(f"'{data}' index IDX using {i + 2}:xtic(1) title '{a}'"
                      for i, a in enumerate(allocators))
    panels = "".join(f"set ylabel '{label}'\nplot {plots.replace('IDX', str(index))}\n"
                     for index, label in enumerate(ylabels))
    return f"set multiplot layout {len(ylabels)},1 title '{title}'\n{panels}unset multiplot\n"


def write_chart(chosen, allocators, results):
    """Bars per allocator of time, peak RSS and minor page faults relative to mapalloc
    (mapalloc = 1)."""
    if not shutil.which("gnuplot"):
        return None
    data = OUT / "chart.dat"
    with open(data, "w") as out:
        out.write("workload " + " ".join(allocators) + "\n")
        for key in ("median_seconds", "median_rss_kib", "median_minflt"):
            for w in chosen:
                base = results[w.name]["mapalloc"][key] or 1
                values = " ".join(f"{(results[w.name][a][key] or base) / base:.4f}"
                                  for a in allocators)
                out.write(f"\"{w.name}\" {values}\n")
            out.write("\n\n")
    script = (gnuplot_histograms(OUT / "chart.png", 1400, 1300) +
              "set key top left horizontal\nset xtics rotate by -35\nset grid ytics\n"
              "set logscale y 2\n" +
              gnuplot_panels(data, allocators, "mapalloc benchmark: relative to mapalloc "
                             "(1 = same, above 1 = worse than mapalloc)",
                             ["wall time ratio", "peak RSS ratio", "minor page faults ratio"]))
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    return OUT / "chart.png"


def compare_with_previous(previous, results, allocators):
    """mapalloc's standing now and in the `previous` run (its results, from last-MODE.json):
    (header, rows) of a table with a row per workload run both times and a column per
    baseline present in both runs for it, each cell mapalloc's median time divided by the
    baseline's, "before -> now"; a row is flagged when mapalloc lost more than 10 % against
    the baselines (geometric mean of now / before over the row's cells). None if nothing to
    compare."""
    baselines = [a for a in allocators if a not in MAPALLOC_BUILDS]
    rows, shown = [], set()
    for name, per_allocator in results.items():
        old = (previous or {}).get(name)
        if not old or "mapalloc" not in old:
            continue
        cells, changes = [], []
        for baseline in baselines:
            if baseline not in old:
                cells.append("")
                continue
            now = (per_allocator["mapalloc"]["median_seconds"] /
                   per_allocator[baseline]["median_seconds"])
            before = old["mapalloc"]["median_seconds"] / old[baseline]["median_seconds"]
            cells.append(f"{before:.2f} -> {now:.2f}")
            changes.append(now / before)
            shown.add(baseline)
        if changes:
            flag = "<-- slower than last run" if geomean(changes) > 1.10 else ""
            rows.append([name] + cells + [flag])
    if not rows:
        return None
    keep = [0] + [i + 1 for i, b in enumerate(baselines) if b in shown] + [len(baselines) + 1]
    header = ["workload"] + [f"mapalloc/{b}" for b in baselines] + [""]
    return [header[i] for i in keep], [[row[i] for i in keep] for row in rows]


def extra_allocator(spec):
    """An extra allocator given as "NAME=PATH" (PATH: a shared library to preload) -> (NAME,
    absolute Path). ValueError with a one-line message if NAME is not a new plain name or
    PATH is not a library that the dynamic loader can preload."""
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise ValueError(f"{spec}: expected NAME=PATH.so (e.g. mimalloc3=/path/libmimalloc.so)")
    if name in ALLOCATORS:
        raise ValueError(f"{spec}: {name} is a built-in allocator: give the other one a new name")
    if not all(c.isalnum() or c in "._+-" for c in name):
        raise ValueError(f"{spec}: an allocator's name is made of letters, digits and . _ + -")
    library = Path(path).expanduser().resolve()
    if not library.is_file():
        raise ValueError(f"{name}: no such library: {path}")
    # A library the loader cannot preload is only warned about, and the program runs with
    # glibc's malloc: measuring it would silently measure glibc.
    probe = subprocess.run(["true"], env=environment(library), capture_output=True, text=True)
    if probe.returncode != 0 or "preload" in probe.stderr:
        message = probe.stderr.strip().splitlines()
        raise ValueError(f"{name}: cannot preload {library}"
                         + (f": {message[-1]}" if message else ""))
    return name, library


# --env NAME:VAR=VALUE: variables set for one allocator's runs (not for redis or callgrind).
ALLOCATOR_ENV = {}


def allocator_env(spec, allocators):
    """--env "NAME:VAR=VALUE" -> (NAME, VAR, VALUE); ValueError with a one-line message if
    NAME is not one of `allocators` or the rest is not VAR=VALUE."""
    name, sep, setting = spec.partition(":")
    variable, equals, value = setting.partition("=")
    if not sep or not equals or not variable:
        raise ValueError(f"--env {spec}: expected NAME:VAR=VALUE (e.g. mapalloc+prof:MAPALLOC_PROF=1)")
    if name not in allocators:
        raise ValueError(f"--env {spec}: {name} is not an allocator of this run")
    return name, variable, value


def choose_allocators(names, extras):
    """{name: library to preload (None: glibc)} of the allocators to run, mapalloc first:
    `names` (default: every one of ALLOCATORS; an item may be NAME=PATH) and the NAME=PATH
    `extras`. A missing baseline of ALLOCATORS is left out with a note; a bad NAME=PATH or an
    unknown name is a ValueError."""
    chosen = {}
    items = list(names or ALLOCATORS) + list(extras or [])
    # The extra allocators are checked first: a bad one stops everything, before any note.
    checked = {item: extra_allocator(item) for item in items if "=" in item}
    for item in items:
        if item in checked:
            name, library = checked[item]
            chosen[name] = library
            continue
        if item not in ALLOCATORS:
            raise ValueError(f"unknown allocator: {item} (known: {', '.join(ALLOCATORS)}; "
                             "or NAME=PATH.so)")
        library, package = ALLOCATORS[item]
        if library is None or library.exists():
            chosen[item] = library
        else:
            remedy = (f"install the Debian package {package}" if package
                      else f"make {library.relative_to(ROOT)}")
            print(f"note: {item} is missing ({library}); {remedy}")
    if "mapalloc" not in chosen:
        chosen = dict(mapalloc=ALLOCATORS["mapalloc"][0], **chosen)
    return chosen


EPILOG = """allocators: mapalloc, mapalloc-secure, mapalloc-unchecked (this tree's builds), glibc,
jemalloc, mimalloc, tcmalloc (Debian's packages); all by default. Any other allocator is
given as NAME=PATH.so, a shared library to preload: with --extra it joins the default set (or
the --allocators list), and --allocators accepts NAME=PATH items too. From make:
  make bench EXTRA="mimalloc3=/opt/mimalloc/libmimalloc.so.3.4 scudo=/usr/lib/.../libscudo.so"
  make bench-quick EXTRA=...
examples:
  scripts/bench.py --quick --extra mimalloc3=/opt/mimalloc/libmimalloc.so.3.4
  scripts/bench.py --only bigbuffers xthread --allocators mapalloc glibc mi3=./libmimalloc.so

Tables: median wall time, peak RSS and minor page faults (ru_minflt of the program and its
children; the server's own for redis) per workload and allocator, 'xR' = R times mapalloc's
figure. Summary: per baseline, geometric means of mapalloc's figure / the baseline's (below 1:
mapalloc does better). A full run without --only is compared with the previous one of the
same mode (build/bench/last-full.json or last-quick.json), baseline by baseline."""


def write_results(chosen, allocators, results, tables, summary, runs_of, mode):
    """build/bench/results.csv (a row per workload and allocator), results.md (the tables and
    the summary) and results.json (everything, with each allocator's library)."""
    with open(OUT / "results.csv", "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["workload", "kind", "allocator", "runs", "median_seconds",
                         "median_peak_rss_kib", "time_vs_mapalloc", "rss_vs_mapalloc",
                         "median_minor_faults", "minor_faults_vs_mapalloc"])
        for w in chosen:
            base = results[w.name]["mapalloc"]
            for a in allocators:
                e = results[w.name][a]
                faults_ratio = (f"{e['median_minflt'] / base['median_minflt']:.3f}"
                                if e["median_minflt"] is not None and base["median_minflt"]
                                else "")
                writer.writerow([w.name, w.kind, a, runs_of[w.name], f"{e['median_seconds']:.4f}",
                                 e["median_rss_kib"],
                                 f"{e['median_seconds'] / base['median_seconds']:.3f}",
                                 f"{e['median_rss_kib'] / base['median_rss_kib']:.3f}",
                                 e["median_minflt"], faults_ratio])
    (OUT / "results.md").write_text(render_markdown(tables, summary))
    (OUT / "results.json").write_text(json.dumps({
        "mode": mode, "allocators": {a: str(lib) if lib else None for a, lib in allocators.items()},
        "workloads": [{"name": w.name, "kind": w.kind, "runs": runs_of[w.name]} for w in chosen],
        "results": results, "summary": summary}, indent=1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smaller inputs, fewer runs (a few minutes)")
    parser.add_argument("--runs", type=int, help="runs per allocator and workload (default 5; "
                        "3 with --quick)")
    parser.add_argument("--real-runs", type=int, help="runs per allocator of the real programs "
                        "(default: --runs, at most 3)")
    parser.add_argument("--only", nargs="*", help="workloads whose names contain these")
    parser.add_argument("--allocators", nargs="*", metavar="NAME",
                        help="a subset of " + ", ".join(ALLOCATORS) + "; NAME=PATH.so items "
                        "add other allocators (default: all)")
    parser.add_argument("--extra", nargs="+", action="extend", default=[], metavar="NAME=PATH",
                        help="other allocators, each a shared library to preload, added to the "
                        "default set or to --allocators (make bench EXTRA=\"NAME=PATH ...\")")
    parser.add_argument("--env", nargs="+", action="extend", default=[], metavar="NAME:VAR=VALUE",
                        help="an environment variable for one allocator's runs, e.g. to compare "
                        "a build with a feature on: --extra mapalloc+prof=build/libmapalloc.so "
                        "--env mapalloc+prof:MAPALLOC_PROF=1")
    parser.add_argument("--no-callgrind", action="store_true")
    parser.add_argument("--prime-mib", type=int, default=1024, metavar="MIB",
                        help="warm free memory left before every run (default %(default)s; 0: "
                        "none, to see the order effect it removes)")
    args = parser.parse_args()
    global PRIME_MIB
    PRIME_MIB = args.prime_mib
    runs = args.runs or (3 if args.quick else 5)
    real_runs = args.real_runs or min(runs, 3)
    try:
        allocators = choose_allocators(args.allocators, args.extra)
        for spec in args.env:
            name, variable, value = allocator_env(spec, allocators)
            ALLOCATOR_ENV.setdefault(name, {})[variable] = value
    except ValueError as error:
        sys.exit(f"bench.py: {error}")

    build(args.quick)
    chosen = workloads(args.quick, args.only)
    runs_of = {w.name: real_runs if w.kind == "real" else runs for w in chosen}
    results = measure(chosen, allocators, runs_of)
    fastpath = {}
    if not args.no_callgrind and shutil.which("valgrind"):
        for allocator, library in allocators.items():
            progress(f"callgrind: fast path of {allocator}")
            fastpath[allocator] = callgrind_pairs(library, 32)
        progress("")

    tables = [("wall time", table_rows(chosen, allocators, results, "median_seconds", fastpath)),
              ("peak RSS", table_rows(chosen, allocators, results, "median_rss_kib")),
              ("minor page faults", table_rows(chosen, allocators, results, "median_minflt"))]
    summary = summary_lines(chosen, allocators, results, fastpath)
    print(f"\nmedians of {runs} runs per allocator ({real_runs} for real programs), alternating;"
          " 'xR' = R times mapalloc's figure")
    for title, (header, rows) in tables:
        print(f"\n{title}\n" + render_text(header, rows))
    print()
    print("\n".join(summary))
    extras = [f"{a}={lib}" for a, lib in allocators.items() if a not in ALLOCATORS]
    if extras:
        print("extra allocators: " + ", ".join(extras))
    for name, settings in ALLOCATOR_ENV.items():
        print(f"{name} runs with " + " ".join(f"{k}={v}" for k, v in settings.items()))

    mode = "quick" if args.quick else "full"
    history = OUT / f"last-{mode}.json"
    previous = json.loads(history.read_text()) if history.exists() else None
    comparison = compare_with_previous(previous, results, allocators)
    if comparison and not args.only:
        print(f"\ncompared with the previous {mode} run: mapalloc's time / each baseline's, "
              "before -> now")
        print(render_text(*comparison))
    if not args.only:
        history.write_text(json.dumps(results))

    write_results(chosen, allocators, results, tables, summary, runs_of, mode)
    chart = write_chart(chosen, allocators, results)
    print(f"\nwritten: {OUT / 'results.csv'}, {OUT / 'results.md'}, {OUT / 'results.json'}" +
          (f", {chart}" if chart else " (no gnuplot: no chart)"))


if __name__ == "__main__":
    main()
