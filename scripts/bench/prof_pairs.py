#!/usr/bin/env python3
"""The heap profiler's cost in time, measured in pairs (make prof-pairs).

Each run of a workload is a pair: the same command twice at the same moment, once with the
profiler on (MAPALLOC_PROF=1) and once with it off, each pinned to one of two cores, the cores
swapped from one pair to the next. What disturbs a shared machine (other tenants, frequency
changes, the kernel's compaction) then falls more nearly on both halves of a pair alike than on
runs taken one after the other. It does not vanish: on the shared 2-core machines this project
is measured on, single pair ratios still range from 0.7 to 1.9 on a noisy day, hence the median
over many pairs, printed beside the lowest and highest. A multi-threaded workload runs on one
core here: the ratio is its cost per unit of work, not its scaling. Prints each workload's median on/off ratio (with the lowest and highest) and the
geometric means over the synthetic workloads and over the real programs, and writes them to
build/bench/prof-pairs.md.

With --instructions it counts instructions instead (valgrind's cachegrind, no cache simulation):
each workload once with the profiler off and N times with it on (the sample points are random,
so the count moves by a few tenths of a percent between runs), and the ratio of the median to
the off count. Repeatable where times are not; by default over the synthetic workloads only
(written to build/bench/prof-instructions.md).

    scripts/bench/prof_pairs.py [--pairs N] [--full] [--only NAME ...] [--library PATH]
                                [--instructions]
"""
import argparse
import glob
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (make bench's workloads and its measure wrapper)
from pairs import (Side, checked_library, pair_ratios, pairable_workloads,  # noqa: E402
                   write_report)


def remove_profiles(profile_prefix):
    """The profiles a run with the profiler on wrote (PREFIX with %p: one set per process) are
    not kept."""
    for path in glob.glob(profile_prefix.replace("%p", "*")):
        os.unlink(path)


def instructions(workload, library, on, profile_prefix):
    """Instructions of one run of the workload under cachegrind, profiler on or off."""
    env = dict(bench.environment(library), **workload.env)
    env["MAPALLOC_PROF"] = "1" if on else "0"
    env["MAPALLOC_PROF_FILE"] = profile_prefix
    command = ["valgrind", "--tool=cachegrind", "--cache-sim=no",
               "--cachegrind-out-file=/dev/null"] + [str(a) for a in workload.argv]
    with open(workload.stdin, "rb") if workload.stdin else open(os.devnull, "rb") as stdin:
        result = subprocess.run(command, stdin=stdin, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=env)
    found = re.search(rb"I\s+refs:\s+([\d,]+)", result.stderr)
    if result.returncode != 0 or found is None:
        raise RuntimeError(f"{workload.name}: cachegrind failed ({result.returncode}): "
                           f"{result.stderr[-300:].decode(errors='replace')}")
    remove_profiles(profile_prefix)
    return int(found.group(1).replace(b",", b""))


def measure_instructions(chosen, library, runs, profile_prefix):
    """Table rows and {kind: [ratios]} of the instruction counts, on (median of `runs`) / off."""
    rows, ratios_of_kind = [], {"synthetic": [], "real": []}
    for workload in chosen:
        bench.progress(f"{workload.name}: off")
        off = instructions(workload, library, False, profile_prefix)
        on_runs = []
        for run in range(runs):
            bench.progress(f"{workload.name}: on, run {run + 1}/{runs}")
            on_runs.append(instructions(workload, library, True, profile_prefix))
        on = statistics.median(on_runs)
        ratios_of_kind[workload.kind].append(on / off)
        rows.append(f"| {workload.name} | {off / 1e6:.1f} M | {on / 1e6:.1f} M | {on / off:.3f} |")
    return rows, ratios_of_kind


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=9, help="pairs per workload (default 9)")
    parser.add_argument("--full", action="store_true", help="make bench's full scale, not --quick")
    parser.add_argument("--only", nargs="*", default=[], help="workloads whose name contains one")
    parser.add_argument("--library", default=str(bench.ROOT / "build" / "libmapalloc.so"))
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions with cachegrind instead (--pairs: runs on)")
    args = parser.parse_args()
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    library = checked_library(args.library, "prof_pairs.py")
    chosen = pairable_workloads(not args.full, args.only, pinned=not args.instructions)
    profile_prefix = str(bench.OUT / "profiles" / "prof-pairs.%p")
    if args.instructions:
        if not args.only:  # (the real programs take minutes each under valgrind)
            chosen = [w for w in chosen if w.kind == "synthetic"]
        # Threads that spin beside the workload (churn-8t-busy2) count instructions by the time
        # they are left to run, not by the work.
        chosen = [w for w in chosen if "busy" not in w.name]
        rows, ratios_of_kind = measure_instructions(chosen, library, args.pairs,
                                                    profile_prefix)
        bench.progress("")
        header = [f"Heap profiler on / off, instructions (cachegrind; on: median of {args.pairs} "
                  f"runs; {'full' if args.full else 'quick'} scale)", "",
                  "| workload | off | on | on / off |", "|---|---|---|---|"]
        write_report(header, rows, ratios_of_kind, "prof-instructions.md")
        return
    profiles = {"MAPALLOC_PROF_FILE": profile_prefix}
    on = Side("on", library, dict(profiles, MAPALLOC_PROF="1"))
    off = Side("off", library, dict(profiles, MAPALLOC_PROF="0"))
    rows, ratios_of_kind = [], {"synthetic": [], "real": []}
    for workload in chosen:
        ratios = pair_ratios(workload, on, off, args.pairs,
                             after=lambda: remove_profiles(profile_prefix))
        median = statistics.median(ratios)
        ratios_of_kind[workload.kind].append(median)
        rows.append(f"| {workload.name} | {median:.3f} | {min(ratios):.3f} | {max(ratios):.3f} |")
    bench.progress("")
    header = [f"Heap profiler on / off, wall time, {args.pairs} pairs per workload "
              f"({'full' if args.full else 'quick'} scale; median, lowest and highest ratio)",
              "", "| workload | median | lowest | highest |", "|---|---|---|---|"]
    write_report(header, rows, ratios_of_kind, "prof-pairs.md")


if __name__ == "__main__":
    main()
