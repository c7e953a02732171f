#!/usr/bin/env python3
"""The security suite: classic heap bugs, one small program each, run under several allocators.

Every case is tests/security/bug.cpp compiled with -D macros for one bug class and one block
size (8 B, 4 KiB, 256 KiB, 2 MiB; classes without a size are built once). Each program commits
its bug, frees what it holds, churns a few blocks of the same size and prints "got away".

Outcome of one case under one allocator:
  caught     the program stopped (abort, signal, error exit) before "got away";
             "with message" when it also wrote a diagnostic line on stderr
  prevented  a correct-behaviour case (impossibly large request refused with NULL+ENOMEM or
             std::bad_alloc; heap not executable; the just-freed address not returned at once)
             behaved correctly: counted as caught, never with a message
  missed     "got away" printed, or the case ran past the time limit (a hang)

  tests/security/run.py                     the table for every allocator found
  tests/security/run.py --details           and the outcome of every case
  tests/security/run.py --check FILE        mapalloc's two rows against FILE (for make test):
                                            "ok"/"FAIL" lines; a lost catch fails
  tests/security/run.py --update FILE       write mapalloc's two rows to FILE
  --extra NAME=PATH ...                     more allocators (shared libraries to preload)
"""
import argparse
import concurrent.futures
import os
import resource
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCE = os.path.join(ROOT, "tests/security/bug.cpp")
BUILD = os.path.join(ROOT, "build/security")

SIZES = [("8B", 8), ("4KiB", 4096), ("256KiB", 256 << 10), ("2MiB", 2 << 20)]

# (name, defines, sized)
CLASSES = []
for by_name, by in (("1", 1), ("32", 32), ("1MiB", 1 << 20)):
    for how, memcpy in (("direct", 0), ("memcpy", 1)):
        CLASSES.append((f"overflow-{by_name}-{how}", f"-DBUG_OVERFLOW -DBY={by} -DMEMCPY={memcpy}", True))
        CLASSES.append((f"underflow-{by_name}-{how}", f"-DBUG_UNDERFLOW -DBY={by} -DMEMCPY={memcpy}", True))
for access_name, access in (("write", 0), ("read", 1), ("zero", 2)):
    CLASSES.append((f"uaf-{access_name}", f"-DBUG_UAF -DACCESS={access} -DBETWEEN=0", True))
    CLASSES.append((f"uaf-{access_name}-after-malloc", f"-DBUG_UAF -DACCESS={access} -DBETWEEN=1", True))
for when in ("now", "delayed", "interleaved", "reused"):
    CLASSES.append((f"double-free-{when}", f"-DBUG_DOUBLE_FREE_{when.upper()}", True))
for what in ("stack", "alloca", "global", "far"):
    CLASSES.append((f"free-{what}", f"-DBUG_FREE_{what.upper()}", False))
for what in ("unaligned", "interior"):
    CLASSES.append((f"free-{what}", f"-DBUG_FREE_{what.upper()}", True))
for access_name, access in (("write", 0), ("read", 1)):
    for freed in (0, 1):
        name = f"zero-size-{access_name}" + ("-after-free" if freed else "")
        CLASSES.append((name, f"-DBUG_ZERO -DACCESS={access} -DFREED={freed}", False))
CLASSES.append(("sized-delete-wrong-size", "-DBUG_SIZED_DELETE", True))
CLASSES.append(("new-then-delete-array", "-DBUG_NEW_DELETE_ARRAY", True))
CLASSES.append(("new-array-then-delete", "-DBUG_NEW_ARRAY_DELETE", True))
for how, name in enumerate(("malloc", "calloc", "realloc", "posix_memalign", "new", "new-array-nothrow",
                            "aligned_alloc")):
    CLASSES.append((f"huge-{name}", f"-DBUG_HUGE -DHOW={how}", False))
CLASSES.append(("exec-heap", "-DBUG_EXEC_HEAP", True))
CLASSES.append(("reuse-at-once", "-DBUG_REUSE", True))

PREVENTION_CLASSES = ("huge-", "exec-heap", "reuse-at-once")


def cases():
    for name, defines, sized in CLASSES:
        if sized:
            for size_name, size in SIZES:
                yield f"{name}/{size_name}", f"{defines} -DSIZE={size}"
        else:
            yield name, defines


def binary_of(case):
    return os.path.join(BUILD, case.replace("/", "."))


def build_all(jobs):
    os.makedirs(BUILD, exist_ok=True)
    source_time = os.path.getmtime(SOURCE)
    todo = [(case, defines) for case, defines in cases()
            if not os.path.exists(binary_of(case)) or os.path.getmtime(binary_of(case)) < source_time]

    def build(item):
        case, defines = item
        # -O0 and no builtins: the bug must reach the allocator as written.
        command = (["g++", "-std=c++17", "-O0", "-fno-builtin", "-U_FORTIFY_SOURCE",
                    "-D_FORTIFY_SOURCE=0", "-w"] + defines.split() + [SOURCE, "-o", binary_of(case)])
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"building {case} failed:\n{result.stderr}")

    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        list(pool.map(build, todo))


def scudo_path():
    try:
        files = subprocess.run(["dpkg", "-L", "libclang-rt-14-dev"], capture_output=True,
                               text=True).stdout.split()
    except OSError:
        return None
    for path in files:
        if path.endswith("libclang_rt.scudo_standalone-x86_64.so") and os.path.exists(path):
            return path
    return None


def allocators(names, extra):
    found = [
        ("mapalloc default", os.path.join(ROOT, "build/libmapalloc.so")),
        ("mapalloc secure", os.path.join(ROOT, "build/libmapalloc-secure.so")),
        ("glibc", ""),
        ("jemalloc", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"),
        ("mimalloc (Debian)", "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2"),
        ("scudo (LLVM 14)", scudo_path()),
    ]
    for item in extra:
        name, _, path = item.partition("=")
        found.append((name, path))
    result = []
    for name, path in found:
        if names and name not in names:
            continue
        if path is None or (path and not os.path.exists(path)):
            print(f"note: {name} not found ({path}), skipped", file=sys.stderr)
            continue
        result.append((name, path))
    return result


def run_case(case, library, timeout):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAPALLOC_", "LD_PRELOAD",
                                                                     "MALLOC_", "GLIBC_TUNABLES"))}
    if library:
        env["LD_PRELOAD"] = library
    try:
        result = subprocess.run([binary_of(case)], env=env, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "missed", "timeout"
    stdout = result.stdout.decode(errors="replace")
    stderr = result.stderr.decode(errors="replace").strip()
    first_line = stderr.splitlines()[0][:160] if stderr else ""
    if "got away" in stdout:
        return "missed", ""
    if result.returncode == 3 and "prevented" in stdout:
        return "prevented", ""
    how = f"signal {-result.returncode}" if result.returncode < 0 else f"exit {result.returncode}"
    if first_line:
        return "message", f"{how}: {first_line}"
    return "caught", how


def run_all(allocator_list, timeout, jobs):
    names = [case for case, _ in cases()]
    work = [(alloc, case) for alloc in allocator_list for case in names]
    outcomes = {}
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        futures = {pool.submit(run_case, case, alloc[1], timeout): (alloc[0], case) for alloc, case in work}
        for future in concurrent.futures.as_completed(futures):
            outcomes[futures[future]] = future.result()
    return names, outcomes


def summary(names, outcomes, allocator):
    counts = {"message": 0, "caught": 0, "prevented": 0, "missed": 0}
    for case in names:
        counts[outcomes[(allocator, case)][0]] += 1
    return counts


def print_table(names, outcomes, allocator_list, markdown):
    total = len(names)
    prevention = sum(1 for case in names if case.startswith(PREVENTION_CLASSES))
    if markdown:
        print(f"| allocator | caught (of {total}) | with a message | prevented | missed |")
        print("|---|---|---|---|---|")
    else:
        print(f"{'allocator':<22} {'caught':>14} {'with message':>13} {'prevented':>10} {'missed':>7}")
    for name, _ in allocator_list:
        c = summary(names, outcomes, name)
        caught = c["message"] + c["caught"] + c["prevented"]
        share = f"{caught}/{total} {100 * caught // total:3d}%"
        if markdown:
            print(f"| {name} | {caught} ({100 * caught // total} %) | {c['message']} | {c['prevented']} | {c['missed']} |")
        else:
            print(f"{name:<22} {share:>14} {c['message']:>13} {c['prevented']:>10} {c['missed']:>7}")
    print(f"({total} cases; caught = stopped before 'got away' or prevented; {prevention} cases are "
          f"prevention cases, which count as caught when the allocator behaved and never have a message)")


def print_details(names, outcomes, allocator_list):
    short = {"message": "MSG", "caught": "stop", "prevented": "ok", "missed": "-"}
    width = max(len(n) for n in names)
    print(f"{'case':<{width}} " + " ".join(f"{name[:10]:>10}" for name, _ in allocator_list))
    for case in names:
        print(f"{case:<{width}} " + " ".join(f"{short[outcomes[(name, case)][0]]:>10}" for name, _ in allocator_list))


BUILDS = {"default": "mapalloc default", "secure": "mapalloc secure"}
RANK = {"missed": 0, "caught": 1, "prevented": 1, "message": 2}


def read_expectation(path):
    expected = {}
    with open(path) as f:
        for line in f:
            line = line.split("#")[0].split()
            if len(line) == 3:
                expected[(line[0], line[1])] = line[2]
    return expected


def write_expectation(path, names, outcomes):
    with open(path, "w") as f:
        f.write("# The security suite's cases mapalloc catches (tests/security/run.py --check; rewrite\n"
                "# with make security-update). Columns: build, case, outcome (message: stopped with a\n"
                "# diagnostic; caught: stopped without one; prevented: behaved correctly). Cases\n"
                "# not listed are missed. make test fails when a listed case is no longer caught (or\n"
                "# loses its message).\n")
        for build, allocator in BUILDS.items():
            for case in names:
                outcome = outcomes[(allocator, case)][0]
                if outcome != "missed":
                    f.write(f"{build} {case} {outcome}\n")


def check(path, names, outcomes):
    expected = read_expectation(path)
    failed = False
    for build, allocator in BUILDS.items():
        lost, gained = [], []
        for case in names:
            now = outcomes[(allocator, case)]
            want = expected.get((build, case), "missed")
            for _ in range(2):  # a catch that depends on random placement gets two more tries
                if RANK[now[0]] >= RANK[want]:
                    break
                now = run_case(case, dict(allocators([allocator], []))[allocator], 10.0)
            if RANK[now[0]] < RANK[want]:
                lost.append(f"{case}: expected {want}, got {now[0]} {now[1]}")
            elif RANK[now[0]] > RANK[want]:
                gained.append(f"{case}: {now[0]} (expected {want})")
        c = summary(names, outcomes, allocator)
        caught = len(names) - c["missed"]
        if lost:
            failed = True
            print(f"FAIL security suite, {allocator}: {len(lost)} catches lost")
            for line in lost:
                print(f"  {line}")
        else:
            print(f"ok security suite, {allocator}: {caught} of {len(names)} caught "
                  f"({c['message']} with a message) as expected")
        for line in gained:
            print(f"note: newly caught under {allocator}: {line} (run make security-update)")
    return not failed


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--allocators", help="comma-separated allocator names (default: all found)")
    parser.add_argument("--extra", nargs="*", default=[], metavar="NAME=PATH")
    parser.add_argument("--check", metavar="FILE")
    parser.add_argument("--update", metavar="FILE")
    parser.add_argument("--details", action="store_true")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per case (default 10)")
    parser.add_argument("--jobs", type=int, default=max(2, (os.cpu_count() or 2) * 2))
    args = parser.parse_args()
    if shutil.which("g++") is None:
        sys.exit("g++ is needed to build the cases")
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core files from the aborts
    build_all(args.jobs)
    names = args.allocators.split(",") if args.allocators else None
    if args.check or args.update:
        names = list(BUILDS.values())
    allocator_list = allocators(names, args.extra)
    case_names, outcomes = run_all(allocator_list, args.timeout, args.jobs)
    if args.update:
        # Only what every one of three runs catches (some catches depend on random placement).
        for _ in range(2):
            _, again = run_all(allocator_list, args.timeout, args.jobs)
            for key, value in again.items():
                if RANK[value[0]] < RANK[outcomes[key][0]]:
                    outcomes[key] = value
        write_expectation(args.update, case_names, outcomes)
        print_table(case_names, outcomes, allocator_list, False)
        return
    if args.check:
        sys.exit(0 if check(args.check, case_names, outcomes) else 1)
    if args.details:
        print_details(case_names, outcomes, allocator_list)
    print_table(case_names, outcomes, allocator_list, args.markdown)


if __name__ == "__main__":
    main()
