"""`mapalloc plot`: the sampled memory timeline (in use, mapped, resident over time) as a PNG."""
import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

import mapalloc_common as common
from mapalloc_common import ToolError

EPILOG = """FILE is what the library writes with MAPALLOC_SAMPLE_MS and MAPALLOC_STATS_FILE (the
statistics table in it, if any, is skipped), or the CSV saved by `mapalloc stats --csv`:
  time_ms,in_use_bytes,mapped_bytes,resident_bytes
  0,587312,4198400,2194560
  ...
If it holds the samples of several processes (children run with mapalloc too), the longest
series is drawn. Needs gnuplot (Debian package gnuplot-nox)."""


def quoted(text):
    """A gnuplot single-quoted string (a quote inside is written twice)."""
    return "'" + str(text).replace("'", "''") + "'"


def read_samples(path):
    """The samples to draw from `path`: a list of (time_ms, in_use, mapped, resident) tuples.
    ToolError (naming the first bad line) if the file is not such a CSV."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as error:
        raise ToolError(f"cannot read {path}: {error.strerror}") from None
    _, series, bad = common.parse_stats_output(text)
    if bad:
        number, line = bad[0]
        raise ToolError(f"{path}:{number}: not a sample line (expected 4 integers, "
                        f"{common.SAMPLE_HEADER}): {line[:60]!r}")
    samples = max(series, key=len) if series else []
    if len(series) > 1:
        common.note(f"{path} holds the samples of {len(series)} processes; drawing the longest "
                    f"({len(samples)} samples)")
    if not samples:
        raise ToolError(f"{path} holds no samples (expected CSV lines after the header "
                        f"{common.SAMPLE_HEADER})")
    if any(later[0] < earlier[0] for earlier, later in zip(samples, samples[1:])):
        raise ToolError(f"{path}: the times go backwards (samples of several processes "
                        "interleaved?)")
    return samples


def plot(argv):
    """mapalloc plot FILE [-o OUT.png]: draws the three curves with gnuplot."""
    parser = argparse.ArgumentParser(
        prog="mapalloc plot", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Draw a sampled memory timeline (in use, mapped, resident) as a PNG chart.")
    parser.add_argument("file", metavar="FILE.csv", help="the samples")
    parser.add_argument("-o", "--output", metavar="OUT.png",
                        help="the chart (default: FILE with the suffix .png)")
    parser.add_argument("--title", help="the chart's title (default: the file's name)")
    parser.add_argument("--size", default="1000,500", metavar="W,H",
                        help="in pixels (default 1000,500)")
    args = parser.parse_args(argv)
    output = Path(args.output or Path(args.file).with_suffix(".png"))
    samples = read_samples(args.file)
    gnuplot = shutil.which("gnuplot")
    if gnuplot is None:
        raise ToolError("gnuplot is not installed: apt-get install gnuplot-nox")

    # One unit for the whole chart, chosen from the largest value, so the axis reads simply.
    top = max(max(sample[1:]) for sample in samples)
    unit, divisor = next(((name, size) for name, size in (("GiB", 1 << 30), ("MiB", 1 << 20))
                          if top >= 4 * size), ("KiB", 1 << 10))
    title = args.title or f"mapalloc memory timeline: {Path(args.file).name}"
    with tempfile.TemporaryDirectory(prefix="mapalloc-plot-") as scratch:
        data = Path(scratch) / "samples.dat"
        data.write_text("".join(f"{t / 1000:.3f} {u / divisor:.4f} {m / divisor:.4f} "
                                f"{r / divisor:.4f}\n" for t, u, m, r in samples))
        curves = ", ".join(f"{quoted(data)} using 1:{column} with lines linewidth 2 title '{name}'"
                           for column, name in ((2, "in use"), (3, "mapped"), (4, "resident")))
        script = f"""set terminal {png_terminal(gnuplot)} size {args.size}
set output {quoted(output)}
set title {quoted(title)} noenhanced
set xlabel 'time (s)'
set ylabel '{unit}'
set yrange [0:*]
set grid
set key top left
plot {curves}
"""
        result = subprocess.run([gnuplot], input=script, text=True, capture_output=True)
    if result.returncode != 0 or not output.exists():
        raise ToolError(f"gnuplot failed: {result.stderr.strip()[-300:]}")
    peaks = ", ".join(f"{name} {common.format_bytes(max(s[column] for s in samples))}"
                      for column, name in ((1, "in use"), (2, "mapped"), (3, "resident")))
    print(f"wrote {output} ({len(samples)} samples over {samples[-1][0] / 1000:.2f} s; "
          f"peaks: {peaks})")
    return 0


def png_terminal(gnuplot):
    """pngcairo (antialiased) when this gnuplot has it, else the plain png terminal."""
    probe = subprocess.run([gnuplot, "-e", "set terminal pngcairo"], capture_output=True)
    return "pngcairo font ',10'" if probe.returncode == 0 else "png"
