#!/usr/bin/env python3
"""Keeps src/'s layers (README.md, "Design"): fails when a folder includes a higher one, when
a file outside src/platform/ calls the OS or includes a system header for it, or when a file
includes a header of its own folder that includes it back (a cycle).

    scripts/check_layers.py [SRC_DIR]        (default: src; exit status 1 on a violation)

The tracing library (src/trace/) is a separate library built on the allocator; its own file
I/O and locking are exempt from the system-call rule, not from the include order.
"""
import pathlib
import re
import sys

# Lowest first: a folder may include itself and the folders before it.
LAYERS = ["platform", "prof", "core", "api", "override", "trace"]
# Folders whose files may call the OS directly.
OS_FOLDERS = {"platform", "trace"}
# Calls that go to the kernel or to libc's process services (memory, files, clocks, threads,
# the environment, randomness, the break).
OS_CALLS = re.compile(
    r"(?<![\w.>:])(mmap|munmap|madvise|mremap|mprotect|brk|sbrk|syscall|getenv|secure_getenv|"
    r"open|openat|read|write|close|fcntl|fstat|flock|getrlimit|clock_gettime|gettimeofday|"
    r"nanosleep|usleep|sleep|sched_yield|getpid|gettid|getauxval|getrandom|sysconf|prctl|"
    r"pthread_create|pthread_detach|pthread_once|pthread_key_create|pthread_setspecific|"
    r"pthread_getspecific|pthread_atfork)\s*\(")
OS_HEADERS = re.compile(
    r"#\s*include\s*<(sys/mman\.h|sys/syscall\.h|sys/auxv\.h|sys/file\.h|sys/stat\.h|"
    r"sys/resource\.h|unistd\.h|fcntl\.h|pthread\.h|sched\.h|time\.h|sys/random\.h)>")
INCLUDE = re.compile(r'#\s*include\s*"([^"]+)"')


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r'"(\\.|[^"\\\n])*"', '""', text)  # string literals (not #include lines)


def check(src):
    problems = []
    files = sorted(p for p in src.rglob("*") if p.suffix in (".h", ".cpp"))
    graph = {}
    for path in files:
        rel = path.relative_to(src)
        if len(rel.parts) != 2:
            problems.append(f"{rel}: every source file belongs to a layer folder ({', '.join(LAYERS)})")
            continue
        folder = rel.parts[0]
        if folder not in LAYERS:
            problems.append(f"{rel}: unknown layer folder '{folder}' (scripts/check_layers.py)")
            continue
        raw = path.read_text()
        graph[str(rel)] = []
        for number, line in enumerate(raw.splitlines(), 1):
            match = INCLUDE.search(line)
            if match:
                target = match.group(1)
                if target == "mapalloc.h":
                    continue
                parts = target.split("/")
                if len(parts) != 2 or parts[0] not in LAYERS:
                    problems.append(f"{rel}:{number}: include \"{target}\" by its folder, e.g. "
                                    f"\"{folder}/{parts[-1]}\"")
                    continue
                if LAYERS.index(parts[0]) > LAYERS.index(folder):
                    problems.append(f"{rel}:{number}: {folder}/ includes the higher layer "
                                    f"\"{target}\"")
                graph[str(rel)].append(target)
            if folder not in OS_FOLDERS and OS_HEADERS.search(line):
                problems.append(f"{rel}:{number}: system header outside src/platform/: "
                                f"{line.strip()}")
        if folder not in OS_FOLDERS:
            code = strip_comments(raw)
            for number, line in enumerate(code.splitlines(), 1):
                for match in OS_CALLS.finditer(line):
                    problems.append(f"{rel}:{number}: calls {match.group(1)}() outside "
                                    f"src/platform/ (add a service to platform/process.h or os.h)")
    # Header cycles (a .cpp and its own header are one unit).
    # A module is a header, its .cpp files and its private header (X_internal.h).
    def unit(name):
        return re.sub(r"(_internal)?\.(h|cpp)$", "", name)
    edges = {}
    for name, targets in graph.items():
        edges.setdefault(unit(name), set()).update(unit(t) for t in targets if unit(t) != unit(name))
    state = {}
    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt]
                problems.append("include cycle: " + " -> ".join(cycle))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2
    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return problems


def main():
    src = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "src")
    problems = check(src)
    for problem in problems:
        print(f"layers: {problem}")
    if problems:
        return 1
    print(f"layers: {src}/ keeps its layers ({' < '.join(LAYERS)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
