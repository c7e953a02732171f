"""`mapalloc compare`: one program under several allocators, side by side."""
import hashlib
import os
import shutil
import stat
import statistics
import sys
import tempfile
from pathlib import Path

import mapalloc_common as common
from mapalloc_common import ToolError
from mapalloc_run import command_parser, positive, program_of

EPILOG = """Each run goes through the measure wrapper (wall time, CPU time = user + sys of the
program and its children, peak RSS, minor page faults of the program and its children);
allocators alternate (A B C D A B C D ...) so that a drift of the machine spreads over all of
them. The table shows medians, and for each other
allocator 'xR' = R times mapalloc's figure (below 1: less than mapalloc).

Every run's stdout and exit status are compared; if they differ the runs are listed by output
and the exit status is 1 (the table is still printed).

stdin: every run reads --stdin FILE (--stdin -: this tool's stdin, read once), or this tool's
stdin when it is redirected from a file (`< input`); else /dev/null.

allocators: mapalloc, mapalloc-secure, mapalloc-unchecked (source tree), glibc, jemalloc,
mimalloc, tcmalloc, or any other as NAME=PATH.so (a shared library to preload, shown as NAME).
Default: mapalloc glibc jemalloc mimalloc, and tcmalloc if installed.
examples:
  mapalloc compare --runs 5 --allocators glibc mimalloc -- sqlite3 :memory: < queries.sql
  mapalloc compare --allocators glibc mimalloc3=/opt/mimalloc/libmimalloc.so.3 -- ./prog"""

MAX_GROUPS = 8  # different outputs listed one by one; a program printing random data has many

# (label, per-run value) of each table row; the cell format follows the key (see format_cell).
METRICS = [("wall time", "seconds", lambda run: run.seconds),
           ("CPU time", "cpu_seconds", lambda run: run.user_seconds + run.sys_seconds),
           ("peak RSS", "rss_kib", lambda run: run.peak_kib),
           ("minor faults", "minflt", lambda run: run.minor_faults)]


def chosen_allocators(requested):
    """The allocators to run, mapalloc first (the base of the ratios), each checked; an item
    NAME=PATH.so is another allocator, named NAME."""
    if requested:
        names = [common.resolve_allocator(n) for item in requested for n in item.split(",") if n]
    else:
        names = common.default_allocators()
    names = ["mapalloc"] + [n for n in dict.fromkeys(names) if n != "mapalloc"]
    for name in names:
        common.require_allocator(name)
    return names


def compare(argv):
    """mapalloc compare [--runs N] [--allocators A B ...] [--stdin FILE] -- PROGRAM ARGS"""
    parser = command_parser("mapalloc compare",
                            "Run a program under several allocators and compare wall time, CPU "
                            "time, peak RSS and minor page faults.", EPILOG)
    parser.add_argument("--runs", type=positive, default=3,
                        help="runs per allocator (default 3)")
    parser.add_argument("--allocators", nargs="+", metavar="NAME",
                        help="allocators, separated by spaces or commas (then use --)")
    parser.add_argument("--stdin", metavar="FILE",
                        help="the program's input in every run (- for this tool's stdin)")
    args = parser.parse_args(argv)
    try:
        allocators = chosen_allocators(args.allocators)
    except ToolError as error:
        # `--allocators glibc ls` took the program for an allocator name.
        if not args.command:
            raise ToolError(f"{error} (put -- before the program)") from None
        raise
    command = program_of(args)
    with tempfile.TemporaryDirectory(prefix="mapalloc-compare-") as scratch:
        results = common.run_alternating(command, allocators, args.runs,
                                         stdin_path=input_file(args.stdin, scratch))
    print(f"mapalloc compare: {common.command_text(command)}")
    print(f"medians of {args.runs} run{'s' if args.runs > 1 else ''} per allocator, alternating;"
          " 'xR' = R times mapalloc's figure\n")
    print(common.render_table(*table(allocators, results)))
    print()
    agree, lines = check_outputs(allocators, results)
    print("\n".join(lines))
    return 0 if agree else 1


def input_file(requested, scratch):
    """The file every run reads as stdin: --stdin FILE; with --stdin -, this tool's stdin saved
    once into `scratch`; without --stdin, this tool's stdin if it is a regular file (`compare
    -- prog < input` then works), else /dev/null (None). A pipe is read only when asked: an
    inherited pipe that never closes would hang the tool."""
    if requested == "-":
        saved = Path(scratch) / "stdin"
        with open(saved, "wb") as out:
            shutil.copyfileobj(sys.stdin.buffer, out)
        return saved
    if requested is None:
        return "/dev/stdin" if stat.S_ISREG(os.fstat(0).st_mode) else None
    try:
        open(requested, "rb").close()
    except OSError as error:
        raise ToolError(f"cannot read {requested}: {error.strerror}") from None
    return requested


def table(allocators, results):
    """(header, rows): a row per metric, a column per allocator, medians with ratios. A metric
    that some run lacks (an older measure reports no page faults) has no row."""
    header = ["metric"] + allocators
    rows = []
    for label, key, value_of in METRICS:
        if any(value_of(run) is None for name in allocators for run in results[name]):
            continue
        medians = {name: statistics.median(value_of(run) for run in results[name])
                   for name in allocators}
        base = medians["mapalloc"]
        rows.append([label] + [common.format_cell(key, medians[name],
                                                  None if name == "mapalloc" or not base else base)
                               for name in allocators])
    return header, rows


def describe(run):
    """'exit status 0, stdout 123 bytes' for a run."""
    return f"exit status {run.status}, stdout {len(run.stdout)} bytes"


def first_difference(reference, other):
    """'line N: "..." instead of "..."' for the first line where two stdouts differ."""
    ours = reference.decode(errors="replace").splitlines()
    theirs = other.decode(errors="replace").splitlines()
    for number, (a, b) in enumerate(zip(ours, theirs), 1):
        if a != b:
            return f"line {number}: {b[:60]!r} instead of {a[:60]!r}"
    number = min(len(ours), len(theirs)) + 1
    return f"line {number}: " + ("missing" if len(theirs) < len(ours) else "extra") + " output"


def check_outputs(allocators, results):
    """Compares the stdout and exit status of every run. Returns (all agree, report lines);
    when they differ the lines group the runs by output and say whether the program looks
    nondeterministic (runs under one allocator differ) or an allocator changes its output."""
    groups = {}  # (status, digest of stdout) -> [(allocator, run number, Measurement)]
    for name in allocators:
        for number, run in enumerate(results[name], 1):
            key = (run.status, hashlib.sha256(run.stdout).hexdigest())
            groups.setdefault(key, []).append((name, number, run))
    if len(groups) == 1:
        first = next(iter(groups.values()))[0]
        count = sum(len(results[name]) for name in allocators)
        lines = [f"outputs agree: all {count} runs gave the same stdout and exit status "
                 f"({describe(first[2])})"]
        if first[2].status != 0:
            lines.append(f"note: the program failed (exit status {first[2].status}) in every "
                         f"run; its stderr ends: {tail(first[2].stderr)}")
        return True, lines

    lines = [f"WARNING: the outputs differ: {len(groups)} different results (stdout and exit "
             "status) among the runs:"]
    reference = next(iter(groups.values()))[0][2]
    shown = list(groups.values())[:MAX_GROUPS]
    for letter, members in zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ", shown):
        run = members[0][2]
        who = runs_text(members, results)
        lines.append(f"  {letter}: {describe(run)}: {who}")
        if run is not reference and run.stdout != reference.stdout:
            lines.append(f"     differs from A at {first_difference(reference.stdout, run.stdout)}")
        if run.status != 0 and run.stderr:
            lines.append(f"     stderr ends: {tail(run.stderr)}")
    if len(groups) > len(shown):
        lines.append(f"  ... and {len(groups) - len(shown)} more")
    unsteady = [name for name in allocators
                if len({(r.status, r.stdout) for r in results[name]}) > 1]
    if unsteady:
        lines.append("the output varies between runs under the same allocator ("
                     + ", ".join(unsteady) + "): the program looks nondeterministic (time, "
                     "random numbers, addresses, thread scheduling), so outputs cannot be "
                     "compared across allocators")
    elif all(len(results[name]) == 1 for name in allocators):
        lines.append("with one run per allocator, a nondeterministic program cannot be told "
                     "from one whose output depends on the allocator: try --runs 3")
    else:
        lines.append("each allocator gives the same output in every run, but not the same as "
                     "the others: the program depends on the allocator (uninitialised memory, "
                     "addresses, malloc_usable_size) or an allocator has a bug")
    return False, lines


def runs_text(members, results):
    """'mapalloc (all 3 runs), glibc runs 1, 3' for the runs of one output group."""
    parts = []
    for name in dict.fromkeys(name for name, _, _ in members):
        numbers = [str(number) for other, number, _ in members if other == name]
        total = len(results[name])
        parts.append(f"{name} (all {total} runs)" if len(numbers) == total > 1 else
                     f"{name} run{'s' if len(numbers) > 1 else ''} {', '.join(numbers)}")
    return ", ".join(parts)


def tail(stderr, limit=200):
    """The last non-empty line of a run's stderr, shortened, for a one-line report."""
    text = (stderr or b"").decode(errors="replace").strip().splitlines()
    return repr(text[-1][-limit:]) if text else "(nothing)"
