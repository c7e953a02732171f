"""Shared helpers of the `mapalloc` command (scripts/mapalloc) and its subcommand modules.

Other modules (mapalloc_run, mapalloc_plot, mapalloc_compare, and mapalloc_trace for record,
replay and trace-info) import what they need from here:

- where things are: `LAYOUT` (source tree or installed), `mapalloc_library()`, `measure_tool()`,
  `version()`;
- allocators: `ALLOCATOR_NAMES`, `allocator_library()`, `require_allocator()`,
  `resolve_allocator()` (a name or NAME=PATH.so), `default_allocators()`,
  `preload_environment()`;
- programs: `check_program()`, `run_inherited()` (one measured run, output passed through),
  `run_alternating()` (several measured runs per allocator, alternating, output captured);
- output: `ToolError`, `note()`, `render_table()`, `format_cell()`, `format_bytes()`,
  `command_text()`, `parse_stats_output()`.

The measuring engine itself is the benchmark driver's (scripts/bench.py, installed next to these
modules): its allocator table, its `measure` wrapper runner and its table renderer.

File layout (see scripts/make/install.mk):
  source tree  scripts/mapalloc, scripts/mapalloc_*.py, scripts/bench.py; libraries in build/
               (or $MAPALLOC_BUILD); measure compiled on demand into build/bench/measure
  installed    PREFIX/bin/mapalloc; PREFIX/lib/libmapalloc*.so; PREFIX/include/mapalloc.h;
               PREFIX/lib/mapalloc/ holds mapalloc_*.py, bench.py and the measure binary
"""
import contextlib
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import bench

HERE = Path(__file__).resolve().parent


class ToolError(Exception):
    """An error reported as one line "mapalloc: MESSAGE" on stderr; `status` becomes the exit
    status (2: usage or setup problem, 127: no such program, as the shell uses)."""

    def __init__(self, message, status=2):
        super().__init__(message)
        self.status = status


def note(message):
    """Prints "mapalloc: MESSAGE" on stderr (a warning or a remark; not an error)."""
    print(f"mapalloc: {message}", file=sys.stderr, flush=True)


class Layout:
    """Where the tool's files are: `installed` (bool), `libdir` (the mapalloc libraries),
    `helperdir` (these modules), `header` (mapalloc.h), `measure` (the measure binary),
    `root` (the source tree, or PREFIX)."""

    def __init__(self):
        source_root = HERE.parent
        # The source tree: this file is scripts/mapalloc_common.py next to include/mapalloc.h.
        self.installed = not (HERE.name == "scripts" and
                              (source_root / "include" / "mapalloc.h").exists())
        if self.installed:  # PREFIX/lib/mapalloc/mapalloc_common.py
            self.root = HERE.parent.parent
            self.libdir = self.root / "lib"
            self.header = self.root / "include" / "mapalloc.h"
            self.measure = HERE / "measure"
        else:
            self.root = source_root
            # Like stress/run.sh: $MAPALLOC_BUILD names another build directory.
            self.libdir = Path(os.environ.get("MAPALLOC_BUILD") or source_root / "build")
            self.header = source_root / "include" / "mapalloc.h"
            self.measure = self.libdir / "bench" / "measure"
        self.helperdir = HERE


LAYOUT = Layout()


def version():
    """mapalloc's version "MAJOR.MINOR.PATCH" from mapalloc.h's MAPALLOC_VERSION_* (the source
    tree's, or the installed copy); None if the header cannot be read."""
    try:
        text = LAYOUT.header.read_text()
    except OSError:
        return None
    parts = [re.search(rf"#define\s+MAPALLOC_VERSION_{p}\s+(\d+)", text)
             for p in ("MAJOR", "MINOR", "PATCH")]
    return ".".join(m.group(1) for m in parts) if all(parts) else None


# ---- allocators ---------------------------------------------------------------------------

# Names `--allocators` accepts: mapalloc's builds, then the baselines of the benchmark.
ALLOCATOR_NAMES = ["mapalloc", "mapalloc-secure", "mapalloc-unchecked"] + \
    [name for name in bench.ALLOCATORS if not name.startswith("mapalloc")]
# compare's default set; tcmalloc joins it when installed.
DEFAULT_ALLOCATORS = ["mapalloc", "glibc", "jemalloc", "mimalloc"]
# Allocators given as NAME=PATH.so on the command line (resolve_allocator): name -> library.
EXTRA_ALLOCATORS = {}


def allocator_library(name):
    """The library to preload for allocator `name` (a Path; None for glibc, which needs none).
    mapalloc's builds are looked for in LAYOUT.libdir; the baselines where Debian installs them
    (bench.ALLOCATORS), or in $MAPALLOC_BASELINE_LIBDIR if set (another architecture's
    multiarch directory, say); an allocator given as NAME=PATH.so, its PATH. The file may not
    exist: see require_allocator()."""
    if name in EXTRA_ALLOCATORS:
        return EXTRA_ALLOCATORS[name]
    if name.startswith("mapalloc"):
        return LAYOUT.libdir / f"lib{name}.so"
    library = bench.ALLOCATORS[name][0]
    if library is not None and os.environ.get("MAPALLOC_BASELINE_LIBDIR"):
        library = Path(os.environ["MAPALLOC_BASELINE_LIBDIR"]) / library.name
    return library


def mapalloc_library(secure=False):
    """The path of libmapalloc.so (libmapalloc-secure.so if `secure`); ToolError if missing."""
    return require_allocator("mapalloc-secure" if secure else "mapalloc")


def require_allocator(name):
    """allocator_library(name), checked: ToolError naming what to do if `name` is unknown, or
    its library is missing (the apt-get command for a baseline, `make` for mapalloc)."""
    if name in EXTRA_ALLOCATORS:
        return EXTRA_ALLOCATORS[name]
    if name not in ALLOCATOR_NAMES:
        raise ToolError(f"unknown allocator: {name} (known: {', '.join(ALLOCATOR_NAMES)}; "
                        "or NAME=PATH.so)")
    library = allocator_library(name)
    if library is None or library.exists():
        return library
    if not name.startswith("mapalloc"):
        raise ToolError(f"{name} is not installed: apt-get install {bench.ALLOCATORS[name][1]}")
    if LAYOUT.installed:
        if name == "mapalloc-unchecked":  # a benchmark-only build, never installed
            raise ToolError("mapalloc-unchecked is only available in the source tree")
        raise ToolError(f"{library} is missing: reinstall mapalloc (make install)")
    target = "make" if name != "mapalloc-unchecked" else f"make {library}"
    raise ToolError(f"{library} is missing: run `{target}` in {LAYOUT.root}")


def resolve_allocator(spec):
    """The allocator name of `spec`, checked: a known name (see require_allocator), or
    NAME=PATH.so, any other allocator as a shared library to preload, which is registered
    under NAME for allocator_library(). ToolError (one line) if PATH is missing or cannot be
    preloaded, or NAME is taken."""
    if "=" not in spec:
        require_allocator(spec)
        return spec
    try:
        name, library = bench.extra_allocator(spec)
    except ValueError as error:
        raise ToolError(str(error)) from None
    if EXTRA_ALLOCATORS.get(name, library) != library:
        raise ToolError(f"{name} is given twice, as {EXTRA_ALLOCATORS[name]} and {library}")
    EXTRA_ALLOCATORS[name] = library
    return name


def default_allocators():
    """compare's default allocators: mapalloc, glibc, jemalloc, mimalloc, and tcmalloc if its
    library exists. Missing baselines are left out with a note (a user who names one with
    --allocators gets an error instead)."""
    chosen = []
    for name in DEFAULT_ALLOCATORS + ["tcmalloc"]:
        library = allocator_library(name)
        if library is None or library.exists() or name.startswith("mapalloc"):
            chosen.append(name)
        elif name != "tcmalloc":
            note(f"{name} is not installed: apt-get install {bench.ALLOCATORS[name][1]} "
                 "(left out)")
    return chosen


def preload_environment(library, extra=None, base=None):
    """A copy of `base` (default os.environ) with `library` first in LD_PRELOAD (an existing
    LD_PRELOAD is kept after it) and the variables of `extra` set."""
    env = dict(os.environ if base is None else base)
    if library is not None:
        env["LD_PRELOAD"] = ":".join([str(library)] + ([env["LD_PRELOAD"]]
                                                       if env.get("LD_PRELOAD") else []))
    env.update(extra or {})
    return env


# ---- running programs ---------------------------------------------------------------------

def check_program(argv):
    """ToolError unless argv names a program that can be run: one line such as "no such
    program: foo" (status 127) or "not executable: ./foo" (126). Returns argv."""
    if not argv:
        raise ToolError("no program given (put it after --, e.g. `mapalloc run -- ls -l`)")
    name = argv[0]
    if "/" in name:
        if not os.path.exists(name):
            raise ToolError(f"no such program: {name}", 127)
        if os.path.isdir(name) or not os.access(name, os.X_OK):
            raise ToolError(f"not executable: {name}", 126)
    elif shutil.which(name) is None:
        raise ToolError(f"no such program: {name}", 127)
    return argv


def measure_tool():
    """The `measure` wrapper (scripts/bench/measure.c). In the source tree it is compiled into
    build/bench/measure when missing or older than its source (with $CC, cc or gcc); when
    installed it is PREFIX/lib/mapalloc/measure."""
    tool = LAYOUT.measure
    if LAYOUT.installed:
        if not tool.exists():
            raise ToolError(f"{tool} is missing: reinstall mapalloc (make install)")
        return tool
    source = LAYOUT.root / "scripts" / "bench" / "measure.c"
    if tool.exists() and tool.stat().st_mtime >= source.stat().st_mtime:
        return tool
    compiler = shlex.split(os.environ.get("CC", "")) or [shutil.which("cc") or "gcc"]
    if not shutil.which(compiler[0]):
        raise ToolError(f"{tool} is missing and there is no C compiler: apt-get install gcc")
    # Compiled under a temporary name and renamed: two concurrent invocations cannot see a
    # half-written binary.
    partial = tool.with_name(f".measure.{os.getpid()}")
    try:
        tool.parent.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(compiler + ["-O2", "-o", str(partial), str(source)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise ToolError(f"cannot compile {source}: {result.stderr.strip()[-300:]}")
        os.replace(partial, tool)
    except OSError as error:
        raise ToolError(f"cannot build {tool}: {error}") from None
    return tool


@contextlib.contextmanager
def interrupts_ignored():
    """While a measured program runs: a Ctrl-C reaches the program (same process group); the
    tool waits for it to end instead of dying first, so that its report still comes out."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_inherited(argv, preload, extra_env=None):
    """Runs argv once through `measure` with `preload` in LD_PRELOAD (None: glibc) and the
    variables of `extra_env` set, its stdin, stdout and stderr those of this process. Returns a
    bench.Measurement (stdout and stderr None; status 128+N if signal N killed it)."""
    env = bench.environment(None)
    env.update(extra_env or {})
    with tempfile.TemporaryDirectory(prefix="mapalloc-") as scratch:
        report = Path(scratch) / "report"
        process = subprocess.Popen([str(measure_tool()), "--preload", str(preload or ""),
                                    "--report", str(report), "--"] + list(argv), env=env)
        # Ignored only once the child exists: dispositions set to "ignore" would be inherited.
        with interrupts_ignored():
            status = process.wait()
        try:
            seconds, peak_kib, user, sys_, faults = bench.parse_report(report.read_text())
        except (OSError, ValueError):
            raise ToolError(f"measure failed (status {status}) running {argv[0]}") from None
    return bench.Measurement(seconds, peak_kib, user, sys_, status, None, None, faults)


def run_alternating(argv, allocators, runs, stdin_path=None, extra_env=None):
    """Runs argv `runs` times under each of `allocators` (names; check them first with
    require_allocator), alternating A B C A B C ... so that slow drifts of the machine spread
    evenly, with progress on stderr. stdin comes from stdin_path (default /dev/null); stdout
    and stderr are captured. Returns {allocator: [bench.Measurement, ...]} in run order."""
    env = bench.environment(None)
    env.update(extra_env or {})
    tool = measure_tool()
    results = {name: [] for name in allocators}
    # Identical outputs share one bytes object: a program printing megabytes, run 15 times,
    # then costs its output's size once, not 15 times.
    seen = {}
    total, done = runs * len(allocators), 0
    for run in range(runs):
        for name in allocators:
            done += 1
            bench.progress(f"[{done}/{total}] {Path(argv[0]).name} under {name} "
                           f"(run {run + 1}/{runs})")
            bench.prime_memory(tool)  # the same warm start for every run (bench.PRIME_MIB)
            try:
                result = bench.measure_process(argv, allocator_library(name), stdin_path,
                                               measure_tool=tool, env=env)
            except RuntimeError as error:
                raise ToolError(str(error)) from None
            results[name].append(result._replace(
                stdout=seen.setdefault(hashlib.sha256(result.stdout).digest(), result.stdout)))
    bench.progress("")
    return results


# ---- output -------------------------------------------------------------------------------

# bench.py's: render_table(header, rows) -> text of aligned columns (header, dashes, rows);
# format_cell(key, value, base=None) -> "1.234s" / "12.3M" (by key), plus " xR" given a base.
render_table = bench.render_text
format_cell = bench.format_cell


def format_bytes(count):
    """1536 -> "1.5 KiB"; the units of the library's own statistics table."""
    value, units = float(count), ["B", "KiB", "MiB", "GiB", "TiB"]
    unit = 0
    while value >= 1024 and unit < len(units) - 1:
        value, unit = value / 1024, unit + 1
    return f"{int(value)} B" if unit == 0 else f"{value:.1f} {units[unit]}"


def command_text(argv, limit=100):
    """argv as one shell-quoted line for a report heading (newlines shown as \\n), shortened
    to `limit` characters."""
    text = shlex.join(str(a) for a in argv).replace("\n", "\\n")
    return text if len(text) <= limit else text[:limit - 3] + "..."


SAMPLE_HEADER = "time_ms,in_use_bytes,mapped_bytes,resident_bytes"


def parse_stats_output(text):
    """Splits what the library wrote into MAPALLOC_STATS_FILE into (tables, series, bad):
    tables: the statistics tables (each a list of lines; one per process that exited normally,
    in the order they were written); series: the sample series (a list of (time_ms, in_use,
    mapped, resident) tuples per header line, i.e. per process); bad: (line number, line) of
    comma-separated lines that are not samples. Child processes inherit the settings, so one
    file can hold several processes' output."""
    tables, series, bad = [], [], []
    table = None
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("mapalloc statistics"):
            table = [line]
            tables.append(table)
        elif table is not None and line.startswith(" "):
            table.append(line)
        elif line.strip() == SAMPLE_HEADER:
            table = None
            series.append([])
        elif "," in line:
            table = None
            fields = line.split(",")
            if len(fields) == 4 and all(f.strip().isdigit() for f in fields):
                if not series:  # samples without a header (a hand-made CSV): one series
                    series.append([])
                series[-1].append(tuple(int(f) for f in fields))
            else:
                bad.append((number, line))
        elif line.strip():
            table = None
    return tables, series, bad
