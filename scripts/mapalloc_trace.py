#!/usr/bin/env python3
"""Allocation traces: record a program's allocation calls once, replay them against allocators.

    mapalloc record [-o FILE] -- CMD [ARGS...]     run CMD with the tracing library preloaded
    mapalloc replay TRACE... [--allocator NAMES|all] [--runs N] [--chart PNG]
    mapalloc trace-info TRACE [-o PNG] [--json]

`scripts/mapalloc` calls record(argv), replay(argv) and trace_info(argv) here (argv: the
arguments after the subcommand; each returns an exit status); `python3 scripts/mapalloc_trace.py
SUBCOMMAND ARGS...` does the same. The trace format is described in src/trace/trace.h; the heavy
lifting is done by the C++ tools replay and trace-info (scripts/replay/, built by
`make trace-tools` next to libmapalloc-trace.so). Measuring and table rendering are
mapalloc_common's and bench.py's. Only the Python standard library is used; charts are drawn by
gnuplot.
"""
import argparse
import datetime
import glob
import json
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (format_rss, gnuplot_histograms)
import mapalloc_common as common  # noqa: E402  (layout, allocators, the measure wrapper)
from mapalloc_common import ToolError  # noqa: E402

LAYOUT = common.LAYOUT
TRACE_LIBRARY = LAYOUT.libdir / "libmapalloc-trace.so"
# The tools: next to the libraries in the source tree (build/), with the private helpers when
# installed (PREFIX/lib/mapalloc/).
TOOLDIR = LAYOUT.helperdir if LAYOUT.installed else LAYOUT.libdir
REPLAY = TOOLDIR / "replay"
TRACE_INFO = TOOLDIR / "trace-info"
OUT = Path.cwd() if LAYOUT.installed else LAYOUT.libdir / "trace"  # replay's chart and table

HEADER = struct.Struct("<8sHHIQII")  # magic, version, header bytes, pid, start ns, flags, name
CHUNK = struct.Struct("<IIIIQQII")  # magic, thread, payload, records, seq, time, checksum, 0
CHUNK_MAGIC = 0x4B4E4843
END_THREAD = 0xFFFFFFFF


def command(function):
    """A subcommand: returns an exit status; a ToolError becomes one line on stderr."""
    def run(argv):
        try:
            return function(argv)
        except ToolError as error:
            common.note(str(error))
            return error.status
    run.__doc__, run.__name__ = function.__doc__, function.__name__
    return run


def ensure_tools():
    """The tracing library and the trace tools: built in the source tree (a no-op when they
    are up to date), checked when installed."""
    if LAYOUT.installed:
        for path in (TRACE_LIBRARY, REPLAY, TRACE_INFO):
            if not path.exists():
                raise ToolError(f"{path} is missing: reinstall mapalloc (make install)")
        return
    files = []  # the Makefile includes scripts/make/trace.mk
    build = [] if LAYOUT.libdir == LAYOUT.root / "build" else [f"BUILD={LAYOUT.libdir}"]
    result = subprocess.run(["make", "--no-print-directory", "-C", str(LAYOUT.root)] + files +
                            build + ["trace-tools"], capture_output=True, text=True)
    if result.returncode != 0:
        raise ToolError("make trace-tools failed:\n" + (result.stdout + result.stderr)[-3000:])


def summarize_file(path):
    """A quick look at a trace without decoding records: the header and the chunk headers.
    Returns a dict (program, pid, calls, threads, complete, bytes, child) or None if `path` is
    not a readable trace."""
    try:
        with open(path, "rb") as trace:
            data = trace.read(HEADER.size)
            magic, version, header_bytes, pid, _, flags, name_bytes = HEADER.unpack(data)
            if magic != b"MAPTRACE":
                return None
            program = trace.read(name_bytes).decode(errors="replace")
            size = os.fstat(trace.fileno()).st_size
            calls, threads, complete, at = 0, set(), False, header_bytes
            while at + CHUNK.size <= size:
                trace.seek(at)
                chunk_magic, thread, payload, records, *_ = CHUNK.unpack(trace.read(CHUNK.size))
                if chunk_magic != CHUNK_MAGIC:
                    break
                if thread == END_THREAD:
                    complete = True
                else:
                    calls += records
                    threads.add(thread)
                at += CHUNK.size + payload
    except (OSError, struct.error):
        return None
    return {"program": program, "pid": pid, "version": version, "calls": calls,
            "threads": len(threads), "complete": complete, "bytes": size, "child": flags & 1}


# ---- record -----------------------------------------------------------------------------------

@command
def record(argv):
    parser = argparse.ArgumentParser(
        prog="mapalloc record", description="Run a command with mapalloc's tracing library "
        "preloaded and record every allocation call to a trace file. A process the command "
        "starts (an exec'd child) is traced too, into FILE.<pid>.")
    parser.add_argument("-o", "--output", default="mapalloc.trace", help="trace file "
                        "(default: mapalloc.trace)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (mapalloc record -o FILE -- COMMAND ARGS...)")
    common.check_program(command)
    ensure_tools()
    output = Path(args.output).resolve()
    pattern = re.compile(re.escape(output.name) + r"(\.\d+)?$")
    for stale in output.parent.glob(glob.escape(output.name) + "*"):
        if pattern.fullmatch(stale.name):
            stale.unlink()
    env = common.preload_environment(TRACE_LIBRARY, {"MAPALLOC_TRACE_FILE": str(output)})
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env)
    with common.interrupts_ignored():  # a Ctrl-C stops the program; the report still comes
        status = process.wait()
    seconds = time.perf_counter() - started
    verdict = "exited with status 0" if status == 0 else (
        f"exited with status {status}" if status > 0 else f"was killed by signal {-status}")
    print(f"\nmapalloc record: {command[0]} {verdict} after {seconds:.2f} s (traced)",
          file=sys.stderr)
    traces = sorted((p for p in output.parent.glob(glob.escape(output.name) + "*")
                     if pattern.fullmatch(p.name)), key=lambda p: (p != output, p.name))
    summaries = [(p, summarize_file(p)) for p in traces]
    summaries = [(p, s) for p, s in summaries if s]
    if not summaries:
        raise ToolError(f"no trace was written to {output} (is the program statically "
                        "linked, or setuid? LD_PRELOAD cannot reach those)", 1)
    for path, info in summaries:
        note = "" if info["complete"] else ", no end marker (the process did not exit normally:" \
            " the trace holds what was flushed)"
        print(f"  {path}: {common.format_bytes(info['bytes'])}, {info['calls']:,} calls in "
              f"{info['threads']} thread{'s' * (info['threads'] != 1)}, {info['program']} "
              f"(pid {info['pid']}){note}", file=sys.stderr)
    biggest = max(summaries, key=lambda item: item[1]["calls"])
    if biggest[0] != output:
        print(f"  the busiest process is {Path(biggest[1]['program']).name}: replay "
              f"{biggest[0]}", file=sys.stderr)
    return status if status >= 0 else 128 - status


# ---- replay -----------------------------------------------------------------------------------

def parse_result(stdout):
    """replay's last line: "result calls=N seconds=S verified=N mismatches=N ..." -> dict."""
    lines = [l for l in stdout.decode(errors="replace").splitlines() if l.startswith("result ")]
    if not lines:
        return None
    fields = dict(item.split("=", 1) for item in lines[-1].split()[1:])
    return {k: float(v) if "." in v else int(v) for k, v in fields.items()}


def choose_allocators(spec):
    """--allocator: "all" (mapalloc, glibc, jemalloc, mimalloc: those installed, the others
    left out with a note) or comma-separated names (each must be installed; NAME=PATH.so: any
    other allocator, a library to preload)."""
    if spec in (None, "all"):
        chosen = []
        for name in common.DEFAULT_ALLOCATORS:
            try:
                chosen.append((name, common.require_allocator(name)))
            except ToolError as error:
                common.note(f"{error} (left out)")
        return chosen
    names = [common.resolve_allocator(n.strip()) for n in spec.split(",") if n.strip()]
    return [(name, common.allocator_library(name)) for name in names]


def ratio_rows(traces, allocators, results, key, render):
    """Rows of one table: a trace per row, an allocator per column, the median of `key` and
    'xR' = R times the first allocator's figure (mapalloc's, by default), as make bench."""
    rows = []
    for trace in traces:
        base = results[trace][allocators[0]][key]
        row = [Path(trace).name]
        for index, allocator in enumerate(allocators):
            value = results[trace][allocator][key]
            cell = render(value)
            if index > 0 and base:
                cell += f" x{value / base:.2f}"
            row.append(cell)
        rows.append(row)
    return ["trace"] + list(allocators), rows


def replay_chart(traces, allocators, results, path):
    """Bars per allocator of replay time and peak RSS, one group per trace."""
    if not shutil.which("gnuplot"):
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    data = path.with_suffix(".dat")
    with open(data, "w") as out:
        for key, scale in (("median_seconds", 1.0), ("median_rss_kib", 1 / 1024)):
            for trace in traces:
                values = " ".join(f"{results[trace][a][key] * scale:.6f}" for a in allocators)
                out.write(f"\"{Path(trace).name}\" {values}\n")
            out.write("\n\n")
    script = (bench.gnuplot_histograms(path, 1100, 800) +
              "set key top left horizontal\nset grid ytics\nset yrange [0:*]\n" +
              bench.gnuplot_panels(data, allocators, "mapalloc replay: the same recorded "
                                   "calls under each allocator (lower is better)",
                                   ["replay time (s)", "peak RSS (MiB)"]))
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    return path


@command
def replay(argv):
    parser = argparse.ArgumentParser(
        prog="mapalloc replay", description="Replay recorded traces under each allocator "
        "(alternating runs) and compare replay time, peak RSS and replayed calls.")
    parser.add_argument("traces", nargs="+", metavar="TRACE")
    parser.add_argument("--allocator", "--allocators", default="all", help="comma-separated "
                        f"names, or all ({', '.join(common.DEFAULT_ALLOCATORS)}; default)")
    parser.add_argument("--runs", type=int, default=3, help="runs per allocator (default 3)")
    parser.add_argument("--chart", type=Path, default=OUT / "replay-chart.png",
                        help=f"PNG chart (default {OUT / 'replay-chart.png'})")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    allocators = choose_allocators(args.allocator)
    if not allocators:
        raise ToolError("no allocator to replay with")
    names = [name for name, _ in allocators]
    ensure_tools()
    traces = [str(Path(t).resolve()) for t in args.traces]
    for trace in traces:  # a bad trace is rejected once, before any measuring
        check = subprocess.run([str(REPLAY), "--check", trace], capture_output=True, text=True)
        if check.returncode != 0:
            raise ToolError(check.stderr.strip() or f"cannot read {trace}", 2)
    results, problems = {}, set()
    for trace in traces:
        runs = common.run_alternating([REPLAY, "--quiet", trace], names, args.runs)
        results[trace] = {}
        for name in names:
            outcomes = []
            for run in runs[name]:
                outcome = parse_result(run.stdout)
                message = (run.stderr or b"").decode(errors="replace").strip()
                if outcome is None or run.status not in (0, 1):  # a crash, a hang
                    raise ToolError(f"replay of {trace} under {name} failed (status "
                                    f"{run.status}):\n{message}", 1)
                if run.status == 1:  # the allocator failed a check: reported, not fatal
                    problems.add(f"{name} on {Path(trace).name}: {outcome['mismatches']} "
                                 f"content mismatches, {outcome['misaligned']} misaligned "
                                 f"blocks, {outcome['failures']} failed allocations\n    " +
                                 "\n    ".join(message.splitlines()[:3]))
                outcomes.append(outcome)
            results[trace][name] = {
                "median_seconds": statistics.median(o["seconds"] for o in outcomes),
                "median_wall_seconds": statistics.median(r.seconds for r in runs[name]),
                "median_rss_kib": statistics.median(r.peak_kib for r in runs[name]),
                "calls": max(o["calls"] for o in outcomes),
                "verified": max(o["verified"] for o in outcomes),
                "runs": [{"replay_seconds": o["seconds"], "wall_seconds": r.seconds,
                          "peak_rss_kib": r.peak_kib} for o, r in zip(outcomes, runs[name])]}

    print(f"medians of {args.runs} runs per allocator, alternating; 'xR' = R times "
          f"{names[0]}'s figure")
    tables = [
        ("replay time (the calls alone, as measured by replay)", "median_seconds",
         lambda v: f"{v:.3f}s"),
        ("wall time of the whole replay process (checking and reading the trace included)",
         "median_wall_seconds", lambda v: f"{v:.3f}s"),
        ("peak RSS (replay's own bookkeeping included: the same for every allocator)",
         "median_rss_kib", bench.format_rss),
    ]
    for title, key, render in tables:
        header, rows = ratio_rows(traces, names, results, key, render)
        print(f"\n{title}\n" + common.render_table(header, rows))
    rows = [[Path(t).name] + [f"{results[t][a]['calls']:,} calls, {results[t][a]['verified']:,} "
                              "blocks checked" for a in names] for t in traces]
    print("\nreplayed calls (every block's first and last byte written, then checked)\n" +
          common.render_table(["trace"] + names, rows))
    if problems:
        print("\nchecks that failed (the allocator returned wrong memory):\n  " +
              "\n  ".join(sorted(problems)))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "replay-results.json").write_text(json.dumps(results, indent=1))
    chart = replay_chart(traces, names, results, args.chart.resolve())
    print(f"\nwritten: {OUT / 'replay-results.json'}" + (f", {chart}" if chart else
                                                          " (no gnuplot: no chart)"))
    return 1 if problems else 0


# ---- trace-info -------------------------------------------------------------------------------

def histogram_label(bucket):
    low, high = bucket["min"], bucket["max"]
    return f"{low:,}" if low == high else f"{low:,}-{high:,}"


def histogram_lines(buckets, total):
    width = max([len(histogram_label(b)) for b in buckets] + [8])
    top = max([b["count"] for b in buckets] + [1])
    for b in buckets:
        bar = "#" * max(1, round(40 * b["count"] / top))
        yield (f"  {histogram_label(b):>{width}}  {b['count']:>12,}  "
               f"{100 * b['count'] / max(total, 1):5.1f}%  {bar}")


def render_info(info):
    lines = []
    started = datetime.datetime.fromtimestamp(info["start_unix_ns"] / 1e9, datetime.timezone.utc)
    lines.append(f"trace {info['file']}: {common.format_bytes(info['file_bytes'])}, format version "
                 f"{info['version']}, {info['chunks']} chunks")
    state = "complete" if info["complete"] else \
        "no end marker: the process did not exit normally (the trace holds what was flushed)"
    lines.append(f"program {info['program']} (pid {info['pid']}"
                 f"{', a child of a traced process' if info['child_process'] else ''}), started "
                 f"{started:%Y-%m-%d %H:%M:%S} UTC, {info['duration_us'] / 1e6:.3f} s of calls; "
                 f"{state}")
    threads = len(info["threads"])
    lines.append(f"{info['calls']:,} calls in {threads} thread{'s' * (threads != 1)}: "
                 f"{info['allocations']:,} blocks allocated ({common.format_bytes(info['allocated_bytes'])}"
                 f" requested), {info['frees']:,} freed, {info['never_freed']:,} never freed "
                 f"({common.format_bytes(info['live_at_end_bytes'])})")
    lines.append(f"peak live: {common.format_bytes(info['peak_live_bytes'])} requested "
                 f"(at call {info['peak_at_call']:,}); peak block count "
                 f"{info['peak_live_blocks']:,}")
    if info["unknown_refs"]:
        lines.append(f"{info['unknown_refs']:,} calls handed in blocks the trace never saw "
                     "allocated (made while the tracer was starting, or by another process)")
    rows = [[o["op"], f"{o['calls']:,}", f"{o['failed']:,}", f"{o['bytes']:,}"]
            for o in info["ops"]]
    lines += ["", "calls per operation", common.render_table(
        ["operation", "calls", "returned NULL", "bytes requested"], rows)]
    rows = [[str(t["thread"]), f"{t['calls']:,}", f"{t['allocations']:,}", f"{t['frees']:,}",
             f"{t['bytes']:,}"] for t in info["threads"]]
    lines += ["", "calls per thread", common.render_table(
        ["thread", "calls", "allocations", "frees", "bytes requested"], rows)]
    lines += ["", "block sizes (requested bytes; power-of-two buckets)"]
    lines += histogram_lines(info["size_histogram"], info["allocations"])
    lines += ["", "block lifetimes (allocations made, by any thread, between a block's "
              "allocation and its free)"]
    lines += histogram_lines(info["lifetime_histogram"], info["allocations"])
    lines.append(f"  {'never freed':>8}  {info['never_freed']:>12,}  "
                 f"{100 * info['never_freed'] / max(info['allocations'], 1):5.1f}%")
    return "\n".join(lines)


def info_chart(info, path):
    if not shutil.which("gnuplot"):
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    data = path.with_suffix(".dat")
    with open(data, "w") as out:
        for key in ("size_histogram", "lifetime_histogram"):
            for b in info[key]:
                out.write(f"\"{histogram_label(b)}\" {b['count']}\n")
            if key == "lifetime_histogram":
                out.write(f"\"never freed\" {info['never_freed']}\n")
            out.write("\n\n")
    name = Path(info["program"]).name or "?"
    script = bench.gnuplot_histograms(path, 1100, 800, clustered=False) + f"""set boxwidth 0.8
set grid ytics
set logscale y 10
set yrange [0.8:*]
set xtics rotate by -40
set key off
set multiplot layout 2,1 title "allocation trace of {name}: {info['calls']:,} calls, {info['allocations']:,} blocks, peak live {common.format_bytes(info['peak_live_bytes'])}"
set title 'block sizes (requested bytes)'
set ylabel 'blocks'
plot '{data}' index 0 using 2:xtic(1) linecolor rgb '#4477aa'
set title "lifetimes (allocations between a block's allocation and its free)"
plot '{data}' index 1 using 2:xtic(1) linecolor rgb '#cc6677'
unset multiplot
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    return path


@command
def trace_info(argv):
    parser = argparse.ArgumentParser(
        prog="mapalloc trace-info", description="Statistics of a trace: calls per operation "
        "and thread, size and lifetime histograms, peak live memory.")
    parser.add_argument("trace", metavar="TRACE")
    parser.add_argument("-o", "--chart", type=Path, help="also draw the histograms (PNG)")
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON")
    args = parser.parse_args(argv)
    ensure_tools()
    result = subprocess.run([str(TRACE_INFO), args.trace], capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stderr)
        return result.returncode
    info = json.loads(result.stdout)
    print(result.stdout.strip() if args.json else render_info(info))
    if args.chart:
        chart = info_chart(info, args.chart.resolve())
        print(f"\nchart: {chart}" if chart else "\n(no gnuplot: no chart)", file=sys.stderr)
    return 0


COMMANDS = {"record": record, "replay": replay, "trace-info": trace_info}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: {sys.argv[0]} record|replay|trace-info ARGS...  (see --help of each)")
    sys.exit(COMMANDS[sys.argv[1]](sys.argv[2:]))
