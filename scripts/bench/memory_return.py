#!/usr/bin/env python3
"""Reproduces the README's memory-return table ("Memory return"): runs build/bench/memory_return
(scripts/bench/memory_return.c: allocate ~770 MiB in mixed sizes, free it all, one small
malloc/free per millisecond for a second, then malloc_trim(0)) under each allocator, and prints
resident memory in MiB at each step as a Markdown table. Run by `make memory-return`.

The allocators are those of scripts/bench.py (mapalloc, glibc, jemalloc, mimalloc, tcmalloc:
this tree's build and Debian's packages; missing ones are left out with a note), plus mapalloc
with the frees made by another thread. Each row is the median of --runs runs, the allocators
alternating run by run.

usage: scripts/bench/memory_return.py [--runs N] [--mib MIB] [--allocators NAME ...]
                                      [--extra NAME=PATH.so ...]
"""
import argparse
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import bench  # noqa: E402  (scripts/bench.py: the allocators and how they are preloaded)

ROOT = bench.ROOT
PROGRAM = ROOT / "build" / "bench" / "memory_return"
DEFAULT_ALLOCATORS = ["mapalloc", "glibc", "jemalloc", "mimalloc", "tcmalloc"]


def version_of(name):
    """"glibc 2.36", "jemalloc 5.3.0", ... from the Debian package; the bare name otherwise."""
    package = "libc6" if name == "glibc" else bench.ALLOCATORS.get(name, (None, None))[1]
    if package is None:
        return name
    found = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package],
                           capture_output=True, text=True)
    version = found.stdout.strip().split("-")[0].split("+")[0]
    return f"{name} {version}" if found.returncode == 0 and version else name


def run_once(library, mib, other_thread):
    """(peak, after the frees, after 1 s, after malloc_trim) in KiB."""
    done = subprocess.run([str(PROGRAM), str(mib), "1" if other_thread else "0"],
                          env=bench.environment(library), capture_output=True, text=True,
                          timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"memory_return failed ({done.returncode}): {done.stderr.strip()}")
    return [int(field) for field in done.stdout.split()]


def mib(kib):
    value = kib / 1024
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs per row (median; default 3)")
    parser.add_argument("--mib", type=int, default=770, help="MiB to allocate (default 770)")
    parser.add_argument("--allocators", nargs="*", metavar="NAME",
                        help="a subset of " + ", ".join(DEFAULT_ALLOCATORS) +
                        " (default: all); NAME=PATH.so items add other allocators")
    parser.add_argument("--extra", nargs="*", metavar="NAME=PATH", default=[],
                        help="other allocators, each a shared library to preload")
    args = parser.parse_args()
    if not PROGRAM.exists():
        sys.exit(f"{PROGRAM} is missing: run `make memory-return`")
    try:
        chosen = bench.choose_allocators(args.allocators or DEFAULT_ALLOCATORS, args.extra)
    except ValueError as error:
        sys.exit(str(error))
    # (label, library, frees in another thread)
    rows = []
    for name, library in chosen.items():
        label = name if name.startswith("mapalloc") else version_of(name)
        rows.append((label, library, False))
        if name == "mapalloc":
            rows.append(("mapalloc, frees in another thread", library, True))
    results = {label: [] for label, _, _ in rows}
    for run in range(args.runs):
        for label, library, other_thread in rows:
            print(f"run {run + 1}/{args.runs}: {label}", file=sys.stderr, flush=True)
            results[label].append(run_once(library, args.mib, other_thread))
    print(f"resident memory in MiB, medians of {args.runs} runs "
          f"(build/bench/memory_return {args.mib})\n")
    print("| allocator | peak | after the frees | after 1 s of light activity | "
          "after `malloc_trim(0)` |")
    print("| --- | --- | --- | --- | --- |")
    for label, _, _ in rows:
        peak, freed, light, trimmed = (statistics.median(run[i] for run in results[label])
                                       for i in range(4))
        share = f" ({100 * light / peak:.1f}% of peak)" if peak else ""
        print(f"| {label} | {mib(peak)} | {mib(freed)} | {mib(light)}{share} | {mib(trimmed)} |")


if __name__ == "__main__":
    main()
