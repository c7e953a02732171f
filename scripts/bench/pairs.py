#!/usr/bin/env python3
"""mapalloc against other allocators, timed in pairs (make bench-pairs).

Each run of a workload is a pair: the same command under mapalloc and under one other
allocator, started at the same moment, each pinned to one of the two cores, the cores swapped
from one pair to the next. What disturbs a shared machine (other tenants, frequency changes,
the kernel's compaction) then falls on both halves of a pair more nearly alike than on runs
taken one after the other, which is what make bench does: there the same program moves by
10-20 % from one run to the next on this project's 2-core machines, which hides the few per
cent that decide whether mapalloc is the fastest. Prints, per workload, the median ratio of
mapalloc's time to each other allocator's (with the lowest and highest), the ratio to the
fastest of the others (the largest of those medians: below 1, mapalloc was the fastest; as the
largest of several noisy medians it leans a little high), and the geometric means over the synthetic
workloads and over the real programs; writes them to build/bench/pairs.md.

A multi-threaded workload runs on one core here: the ratio is its cost per unit of work, not
its scaling (make bench measures that). redis, a server beside its client, is left out.

    scripts/bench/pairs.py [--pairs N] [--full] [--only NAME ...] [--against NAME ...]
                           [--extra NAME=PATH ...] [--library PATH] [--output FILE]

NAME is one of make bench's allocators (glibc, jemalloc, mimalloc, tcmalloc, mapalloc-secure,
...) or NAME=PATH.so, any shared library to preload (mimalloc 3 built from ../shared/baselines,
for example). Default: glibc, jemalloc, mimalloc and tcmalloc, those that are installed.
"""
import argparse
import collections
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import bench  # noqa: E402  (make bench's workloads, allocators and measure wrapper)

# One half of a pair: a name for the table, the library to preload (None: glibc's malloc) and
# variables added to the workload's environment.
Side = collections.namedtuple("Side", "name library env")

DEFAULT_AGAINST = ["glibc", "jemalloc", "mimalloc", "tcmalloc"]


def paired_run(workload, first, second, first_core, after=None):
    """One pair: `workload` under the Side `first` pinned to core first_core and under `second`
    on the other core, started together. Returns (first's seconds, second's seconds). `after`,
    if given, is called once both have ended (to remove what they wrote)."""
    processes = []
    bench.prime_memory()  # both start from the same warm free memory (bench.PRIME_MIB)
    try:
        for side, core in ((first, first_core), (second, 1 - first_core)):
            env = dict(bench.environment(None), **workload.env, **side.env)
            command = ["taskset", "-c", str(core)] + bench.measure_command(workload.argv,
                                                                            side.library)
            with open(workload.stdin or os.devnull, "rb") as stdin:
                # stderr to a file, not a pipe: a pipe read only after the other run ended could
                # fill and stall this one.
                report = tempfile.TemporaryFile()
                processes.append((side, subprocess.Popen(command, stdin=stdin,
                                                         stdout=subprocess.DEVNULL,
                                                         stderr=report, env=env), report))
        seconds = []
        for side, process, report in processes:
            process.wait()
            report.seek(0)
            stderr = report.read()
            if process.returncode != 0:
                raise RuntimeError(f"{workload.name} under {side.name}: a run failed "
                                   f"({process.returncode}): "
                                   f"{stderr[-300:].decode(errors='replace')}")
            seconds.append(bench.split_report(stderr)[1][0])
    finally:
        for _, process, report in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
            report.close()
    if after is not None:
        after()
    return seconds[0], seconds[1]


def pair_ratios(workload, first, second, pairs, after=None):
    """first's time / second's time in each of `pairs` pairs, the cores swapped every pair."""
    ratios = []
    for pair in range(pairs):
        bench.progress(f"{workload.name}: {first.name} / {second.name}, pair {pair + 1}/{pairs}")
        a, b = paired_run(workload, first, second, pair % 2, after)
        ratios.append(a / b)
    return ratios


def pairable_workloads(quick, only, pinned=True):
    """make bench's workloads (inputs built), without the server (not one command to pin);
    exits if `pinned` runs are asked for on a machine of one core."""
    if pinned and (os.cpu_count() or 1) < 2:
        sys.exit(f"{Path(sys.argv[0]).name}: needs two cores (one for each half of a pair)")
    bench.build(quick)
    chosen = [w for w in bench.workloads(quick, only) if w.server is None]
    if not chosen:
        sys.exit(f"{Path(sys.argv[0]).name}: no workload matches --only")
    return chosen


def write_report(header, rows, ratios_of_kind, path):
    """Prints the table and the geometric means of each {label: ratios}, and writes them to
    `path` (a file name alone: in build/bench)."""
    lines = header + rows + [""]
    for label, ratios in ratios_of_kind.items():
        if ratios:
            lines.append(f"- geometric mean, {label}: {bench.geomean(ratios):.3f} "
                         f"({len(ratios)} workloads)")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    (bench.OUT / path).write_text(text)


def other_sides(names, extras):
    """The Sides to compare with: make bench's allocators by name (or NAME=PATH.so items) and
    the NAME=PATH.so `extras` (a missing baseline is left out with a note by
    choose_allocators; a bad item exits)."""
    try:
        chosen = bench.choose_allocators(names, extras)
    except ValueError as error:
        sys.exit(f"pairs.py: {error}")
    return [Side(name, library, {}) for name, library in chosen.items() if name != "mapalloc"]


def checked_library(path, program):
    """`path` as a Path if the dynamic loader can preload it; else exits with one line (a
    library that cannot be preloaded would silently leave glibc's malloc in its place)."""
    try:
        return bench.extra_allocator(f"library={path}")[1]
    except ValueError as error:
        sys.exit(f"{program}: {str(error).replace('library: ', '', 1)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=9, help="pairs per workload and allocator")
    parser.add_argument("--full", action="store_true", help="make bench's full scale, not --quick")
    parser.add_argument("--only", nargs="*", default=[], help="workloads whose name contains one")
    parser.add_argument("--against", nargs="+", default=DEFAULT_AGAINST,
                        help="allocators to compare with (names or NAME=PATH.so; default: "
                             + ", ".join(DEFAULT_AGAINST) + ")")
    parser.add_argument("--extra", nargs="+", default=[], metavar="NAME=PATH",
                        help="more allocators to compare with, beside --against's")
    parser.add_argument("--output", default=str(bench.OUT / "pairs.md"),
                        help="the report's file (default build/bench/pairs.md)")
    parser.add_argument("--library", default=str(bench.ALLOCATORS["mapalloc"][0]),
                        help="the mapalloc library (default: this tree's build)")
    args = parser.parse_args()
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    others = other_sides(args.against, args.extra)
    if not others:
        sys.exit("pairs.py: no allocator to compare with (see --against)")
    mapalloc = Side("mapalloc", checked_library(args.library, "pairs.py"), {})
    chosen = pairable_workloads(not args.full, args.only)
    rows, ratios_of = [], collections.defaultdict(list)
    for workload in chosen:
        medians, cells = [], []
        for other in others:
            ratios = pair_ratios(workload, mapalloc, other, args.pairs)
            median = statistics.median(ratios)
            medians.append(median)
            ratios_of[f"mapalloc / {other.name}, {workload.kind}"].append(median)
            cells.append(f"{median:.3f} ({min(ratios):.2f}-{max(ratios):.2f})")
        ratios_of[f"mapalloc / the fastest other, {workload.kind}"].append(max(medians))
        rows.append(f"| {workload.name} | " + " | ".join(cells) + f" | {max(medians):.3f} |")
    bench.progress("")
    names = [other.name for other in others]
    header = [f"mapalloc's time / each allocator's, {args.pairs} pairs per workload "
              f"({'full' if args.full else 'quick'} scale; median, lowest-highest)", "",
              "| workload | " + " | ".join(names) + " | vs the fastest other |",
              "|---" * (len(names) + 2) + "|"]
    write_report(header, rows, ratios_of, Path(args.output))


if __name__ == "__main__":
    main()
