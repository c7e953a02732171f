"""`mapalloc run` and `mapalloc stats`: a program with mapalloc preloaded."""
import argparse
import os
import sys
import tempfile
from pathlib import Path

import mapalloc_common as common
from mapalloc_common import ToolError


def command_parser(prog, description, epilog=None):
    """An argparse parser for a subcommand whose last argument is the program to run (every
    argument after `--`, or from the first one that is not an option)."""
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                     usage=f"{prog} [OPTIONS] -- PROGRAM [ARGS...]",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- PROGRAM ARGS",
                        help="the program to run and its arguments")
    return parser


def program_of(args):
    """The program's argv from a command_parser's result, checked (see check_program)."""
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return common.check_program(command)


def positive(text):
    """argparse type: an integer above 0 (a period in milliseconds, a number of runs)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text}")
    return value


RUN_EPILOG = """examples:
  mapalloc run -- python3 script.py
  mapalloc run --stats -- sqlite3 db.sqlite < queries.sql    (table on stderr at exit)
  mapalloc run --sample 20 --stats-file t.csv -- ./prog       then: mapalloc plot t.csv

Programs that close stderr before exiting (GNU coreutils such as ls or sort do) print no table
on stderr: use --stats-file, or `mapalloc stats`. Child processes inherit the settings (and
the same statistics file)."""


def run(argv):
    """mapalloc run: execs the program with mapalloc in LD_PRELOAD; the tool is replaced by it,
    so its exit status, signals and terminal are the program's own."""
    parser = command_parser("mapalloc run", "Run a program with mapalloc preloaded.", RUN_EPILOG)
    parser.add_argument("--stats", action="store_true",
                        help="print mapalloc's statistics table at exit (MAPALLOC_STATS=1), on "
                        "stderr or into --stats-file")
    parser.add_argument("--secure", action="store_true",
                        help="use the secure build (libmapalloc-secure.so)")
    parser.add_argument("--sample", type=positive, metavar="MS",
                        help="append a CSV sample line (time_ms,in_use_bytes,mapped_bytes,"
                        "resident_bytes) every MS milliseconds to --stats-file")
    parser.add_argument("--stats-file", metavar="FILE",
                        help="write the table and samples into FILE (MAPALLOC_STATS_FILE; "
                        "each process that starts with mapalloc truncates it)")
    args = parser.parse_args(argv)
    command = program_of(args)
    if args.sample and not args.stats_file:
        raise ToolError("--sample needs --stats-file (where the samples go)")
    extra = {}
    if args.stats:
        extra["MAPALLOC_STATS"] = "1"
    if args.stats_file:
        # Absolute: the program may change directory before its first malloc.
        extra["MAPALLOC_STATS_FILE"] = os.path.abspath(args.stats_file)
    if args.sample:
        extra["MAPALLOC_SAMPLE_MS"] = str(args.sample)
    env = common.preload_environment(common.mapalloc_library(args.secure), extra)
    sys.stdout.flush()
    try:
        os.execvpe(command[0], command, env)
    except OSError as error:
        raise ToolError(f"cannot run {command[0]}: {error.strerror}", 126) from None


STATS_EPILOG = """The program's stdin, stdout and stderr stay its own; the summary goes to stderr
after it ends (or into --output), and the exit status is the program's. With --sample, the
samples are summarised (and kept with --csv, for `mapalloc plot`).

Child processes that run with mapalloc too write their own tables; the main program's is
normally the last one (it exits last); --all prints every table."""


def stats(argv):
    """mapalloc stats: runs the program with MAPALLOC_STATS=1 into a temporary file, then
    prints the table, the samples' peaks and the measured wall time, CPU time and peak RSS."""
    parser = command_parser("mapalloc stats",
                            "Run a program with mapalloc and print its statistics afterwards.",
                            STATS_EPILOG)
    parser.add_argument("--sample", type=positive, metavar="MS",
                        help="sample memory use every MS milliseconds")
    parser.add_argument("--csv", metavar="FILE", help="with --sample: save the samples as CSV")
    parser.add_argument("--secure", action="store_true", help="use libmapalloc-secure.so")
    parser.add_argument("--brief", action="store_true", help="leave out the per-class rows")
    parser.add_argument("--all", action="store_true",
                        help="print the table of every process (children included)")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="write the summary into FILE instead of stderr")
    args = parser.parse_args(argv)
    command = program_of(args)
    if args.csv and not args.sample:
        raise ToolError("--csv needs --sample (there are no samples otherwise)")
    library = common.mapalloc_library(args.secure)

    with tempfile.TemporaryDirectory(prefix="mapalloc-stats-") as scratch:
        stats_file = Path(scratch) / "stats"
        extra = {"MAPALLOC_STATS": "1", "MAPALLOC_STATS_FILE": str(stats_file)}
        if args.sample:
            extra["MAPALLOC_SAMPLE_MS"] = str(args.sample)
        result = common.run_inherited(command, library, extra)
        text = stats_file.read_text(errors="replace") if stats_file.exists() else ""
    tables, series, _ = common.parse_stats_output(text)

    lines = [f"---- mapalloc stats: {common.command_text(command)}"]
    if not tables and result.status > 128:
        lines.append(f"no statistics: the program was killed (status {result.status}, signal "
                     f"{result.status - 128}) before mapalloc's report at exit")
    elif not tables:
        lines.append("no statistics: the program did not load mapalloc (statically linked "
                     "and set-user-ID programs ignore LD_PRELOAD), or it ended with _exit()")
    shown = tables if args.all else tables[-1:]
    for number, table in enumerate(shown, 1):
        if len(shown) > 1:
            lines.append(f"-- process {number} of {len(shown)} (in the order they exited)")
        if args.brief:  # up to the per-class rows, which begin with a "class ..." heading
            table = table[:next((i for i, line in enumerate(table)
                                 if line.lstrip().startswith("class ")), len(table))]
        lines += table
    if len(tables) > 1 and not args.all:
        lines.append(f"({len(tables) - 1} child processes also reported; --all shows them)")
    if args.sample:
        lines += sample_summary(series, args.csv)
    cpu = (f"CPU {result.user_seconds + result.sys_seconds:.3f} s (user {result.user_seconds:.3f}"
           f" + sys {result.sys_seconds:.3f}), " if result.user_seconds is not None else "")
    lines.append(f"measured      wall time {result.seconds:.3f} s, {cpu}peak RSS "
                 f"{common.format_bytes(result.peak_kib * 1024)}, exit status {result.status}")
    summary = "\n".join(lines) + "\n"
    if args.output:
        write_file(args.output, summary)
    else:
        sys.stderr.write(summary)
    return result.status


def sample_summary(series, csv_path):
    """Lines describing the samples of the main program (the longest series: children, if
    any, usually live shorter), saving them as CSV into csv_path if given."""
    if not series or not max(series, key=len):
        return ["samples       none (the program ended before the first sample)"]
    samples = max(series, key=len)
    lines = []
    if csv_path:
        write_file(csv_path, "".join(",".join(map(str, sample)) + "\n"
                                     for sample in [common.SAMPLE_HEADER.split(",")] + samples))
        lines.append(f"samples       saved to {csv_path} (draw them: mapalloc plot {csv_path})")
    peaks = []
    for column, label in ((1, "in use"), (2, "mapped"), (3, "resident")):
        top = max(samples, key=lambda sample: sample[column])
        peaks.append(f"{label} {common.format_bytes(top[column])} at {top[0] / 1000:.2f} s")
    last = samples[-1]
    lines.append(f"samples       {len(samples)} over {last[0] / 1000:.2f} s; peaks: "
                 + ", ".join(peaks))
    lines.append(f"              last sample: in use {common.format_bytes(last[1])}, mapped "
                 f"{common.format_bytes(last[2])}, resident {common.format_bytes(last[3])}")
    return lines


def write_file(path, text):
    """Writes `text` into `path`; ToolError (not a traceback) if it cannot."""
    try:
        Path(path).write_text(text)
    except OSError as error:
        raise ToolError(f"cannot write {path}: {error.strerror}") from None
