"""`mapalloc profile`: runs a program with mapalloc's heap profiler on (or reads the profile it
wrote), symbolizes the samples with addr2line (binutils; cached per binary), prints the top call
sites and writes a flame graph SVG.

    mapalloc profile [--inuse|--alloc|--peak] [-o DIR] [--sample BYTES] [--top N]
                     [--from PREFIX] -- PROGRAM ARGS...

The profile files (PREFIX.heap.pb.gz, PREFIX.peak.pb.gz: pprof's format, gzipped; and
PREFIX.{inuse,alloc,peak}.folded) are read here by a small decoder of our own; `go tool pprof
PROGRAM PREFIX.heap.pb.gz` reads them too.
"""
import argparse
import gzip
import hashlib
import html
import json
import os
import subprocess
import sys
from pathlib import Path

import mapalloc_common as common

VIEWS = {"inuse": ("heap", "inuse_objects", "inuse_space"),
         "alloc": ("heap", "alloc_objects", "alloc_space"),
         "peak": ("peak", "inuse_objects", "inuse_space")}


# ---- the profile (profile.proto): just what the tool needs -----------------------------------

def _varint(data, at):
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def _fields(data):
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(data, at)
        elif wire == 2:
            length, at = _varint(data, at)
            value, at = data[at:at + length], at + length
        elif wire == 1:
            value, at = data[at:at + 8], at + 8
        elif wire == 5:
            value, at = data[at:at + 4], at + 4
        else:
            raise ValueError("bad wire type")
        yield field, value


def _packed(data):
    values, at = [], 0
    while at < len(data):
        value, at = _varint(data, at)
        values.append(value)
    return values


def read_profile(path):
    """{"types": [...], "samples": [(location ids, values)], "mappings": {id: (start, limit,
    offset, path)}, "locations": {id: (mapping id, address)}}."""
    try:
        data = gzip.open(path).read()
    except (OSError, EOFError) as error:
        raise common.ToolError(f"cannot read the profile {path}: {error}")
    strings, types, samples, mappings, locations = [], [], [], {}, {}
    raw_mappings = []
    for field, value in _fields(data):
        if field == 1:
            f = dict(_fields(value))
            types.append(f.get(1, 0))
        elif field == 2:
            ids, values = [], []
            for f, v in _fields(value):
                if f == 1:
                    ids = _packed(v) if isinstance(v, bytes) else [v]
                elif f == 2:
                    values = _packed(v) if isinstance(v, bytes) else [v]
            samples.append((ids, values))
        elif field == 3:
            f = dict(_fields(value))
            raw_mappings.append(f)
        elif field == 4:
            f = dict(_fields(value))
            locations[f.get(1)] = (f.get(2, 0), f.get(3, 0))
        elif field == 6:
            strings.append(value.decode("utf-8", "replace"))
    for f in raw_mappings:
        mappings[f.get(1)] = (f.get(2, 0), f.get(3, 0), f.get(4, 0), strings[f.get(5, 0)])
    return {"types": [strings[t] for t in types], "samples": samples, "mappings": mappings,
            "locations": locations}


# ---- symbols --------------------------------------------------------------------------------

def _cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mapalloc" / "symbols"


def symbolize(path, addresses):
    """{file address: "function (file:line)"} for one binary, by addr2line, cached on disk by
    the binary's path, size and modification time."""
    try:
        stat = os.stat(path)
    except OSError:
        return {a: f"[{os.path.basename(path)}+{a:#x}]" for a in addresses}
    key = hashlib.sha1(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    cache_file = _cache_dir() / f"{key}.json"
    cache = {}
    try:
        cache = {int(k): v for k, v in json.loads(cache_file.read_text()).items()}
    except (OSError, ValueError):
        pass
    missing = sorted(a for a in set(addresses) if a not in cache)
    if missing:
        try:
            out = subprocess.run(["addr2line", "-f", "-C", "-e", path],
                                 input="\n".join(f"{a:#x}" for a in missing),
                                 capture_output=True, text=True, timeout=600).stdout.splitlines()
        except (OSError, subprocess.TimeoutExpired):
            out = []
        for i, address in enumerate(missing):
            function = out[2 * i] if 2 * i < len(out) else "??"
            where = out[2 * i + 1] if 2 * i + 1 < len(out) else "??:0"
            if function == "??":
                name = f"[{os.path.basename(path)}+{address:#x}]"
            else:
                where = where.split(" (discriminator")[0]
                name = function if where.startswith("??") else f"{function} ({os.path.basename(where)})"
            cache[address] = name
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            cache_file.write_text(json.dumps({str(k): v for k, v in cache.items()}))
        except OSError:
            pass
    return cache


def _is_position_independent(path):
    try:
        with open(path, "rb") as f:
            header = f.read(18)
        return header[:4] == b"\x7fELF" and header[16] == 3  # ET_DYN
    except OSError:
        return True


def names_for(profile):
    """{location id: symbol name}."""
    by_file = {}
    for loc_id, (mapping_id, address) in profile["locations"].items():
        mapping = profile["mappings"].get(mapping_id)
        if mapping is None:
            continue
        start, _, offset, path = mapping
        by_file.setdefault(path, []).append((loc_id, address - start + offset, address))
    names = {}
    for path, entries in by_file.items():
        pic = _is_position_independent(path)
        file_addresses = [fa if pic else a for _, fa, a in entries]
        symbols = symbolize(path, file_addresses)
        for (loc_id, _, _), fa in zip(entries, file_addresses):
            names[loc_id] = symbols.get(fa, "??")
    for loc_id, (_, address) in profile["locations"].items():
        names.setdefault(loc_id, f"[{address:#x}]")
    return names


# ---- output ---------------------------------------------------------------------------------

def flame_graph_svg(stacks, total, title):
    """A flame graph (root at the bottom): stacks is [(frames root first, bytes)]."""
    tree = {"children": {}, "value": 0}
    for frames, value in stacks:
        node = tree
        node["value"] += value
        for frame in frames:
            node = node["children"].setdefault(frame, {"children": {}, "value": 0})
            node["value"] += value
    width, row = 1200, 17
    rects = []
    max_depth = [0]

    def walk(node, x, depth):
        for name, child in sorted(node["children"].items()):
            w = width * child["value"] / total if total else 0
            if w >= 0.3:
                rects.append((x, depth, w, name, child["value"]))
                max_depth[0] = max(max_depth[0], depth)
                walk(child, x, depth + 1)
            x += w

    walk(tree, 0.0, 0)
    height = (max_depth[0] + 3) * row
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="monospace" font-size="11">',
           f'<text x="4" y="13">{html.escape(title)}</text>']
    for x, depth, w, name, value in rects:
        y = height - (depth + 1) * row
        hue = 20 + (int(hashlib.md5(name.encode()).hexdigest()[:4], 16) % 40)
        label = html.escape(name)
        share = 100.0 * value / total
        out.append(f'<g><title>{label}: {common.format_bytes(value)} ({share:.1f} %)</title>'
                   f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 1}" '
                   f'fill="hsl({hue},90%,60%)"/>')
        chars = int(w / 7)
        if chars >= 3:
            text = name if len(name) <= chars else name[:chars - 2] + ".."
            out.append(f'<text x="{x + 2:.1f}" y="{y + row - 5}">{html.escape(text)}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def report(profile_prefix, view, program, out_dir, top, shown=None):
    kind, objects_type, bytes_type = VIEWS[view]
    profile = read_profile(f"{profile_prefix}.{kind}.pb.gz")
    if program is not None and profile["mappings"]:
        first = min(profile["mappings"].values())  # the lowest executable mapping: the program
        made_by = os.path.realpath(first[3])
        wanted = os.path.realpath(program)
        if made_by != wanted:
            raise common.ToolError(f"the profile {profile_prefix} is from a different binary "
                                   f"({made_by}, not {wanted})")
        profile_time = os.stat(f"{profile_prefix}.{kind}.pb.gz").st_mtime
        if os.stat(wanted).st_mtime > profile_time:
            raise common.ToolError(f"the profile {profile_prefix} is from a different binary "
                                   f"({wanted} changed after the profile was written)")
    oi, bi = profile["types"].index(objects_type), profile["types"].index(bytes_type)
    names = names_for(profile)
    sites, stacks, total_bytes, total_objects = {}, [], 0, 0
    for ids, values in profile["samples"]:
        objects, size = values[oi], values[bi]
        if size <= 0:
            continue
        frames = [names.get(i, "??") for i in ids]  # innermost first
        site = frames[0] if frames else "[unknown]"
        entry = sites.setdefault(site, [0, 0])
        entry[0] += size
        entry[1] += objects
        total_bytes += size
        total_objects += objects
        stacks.append((list(reversed(frames)), size))
    label = {"inuse": "in use at exit", "alloc": "allocated since start",
             "peak": "in use at the peak"}[view]
    print(f"mapalloc profile: {common.format_bytes(total_bytes)} {label} "
          f"({total_objects} objects, estimated from samples)")
    print(f"{'bytes':>12} {'%':>6} {'objects':>10}  call site")
    for site, (size, objects) in sorted(sites.items(), key=lambda kv: -kv[1][0])[:top]:
        share = 100.0 * size / total_bytes if total_bytes else 0
        print(f"{common.format_bytes(size):>12} {share:5.1f}% {objects:>10}  {site}")
    svg = Path(out_dir) / f"{Path(profile_prefix).name}.{view}.svg"
    svg.write_text(flame_graph_svg(stacks, total_bytes,
                                   f"{program or profile_prefix}: bytes {label}"))
    print(f"flame graph: {svg}")
    print(f"pprof: go tool pprof -sample_index={bytes_type} {program or shown or 'PROGRAM'} "
          f"{profile_prefix}.{kind}.pb.gz")


def profile(argv):
    parser = argparse.ArgumentParser(
        prog="mapalloc profile",
        description="Run a program with mapalloc's heap profiler; print the top call sites and "
                    "write a flame graph SVG.")
    views = parser.add_mutually_exclusive_group()
    views.add_argument("--inuse", dest="view", action="store_const", const="inuse",
                       help="live bytes at exit (default)")
    views.add_argument("--alloc", dest="view", action="store_const", const="alloc",
                       help="bytes allocated since start")
    views.add_argument("--peak", dest="view", action="store_const", const="peak",
                       help="live bytes when the sampled heap was at its largest")
    parser.add_argument("-o", "--output", default=".", metavar="DIR",
                        help="folder for the profiles and the SVG (default: .)")
    parser.add_argument("--sample", type=int, metavar="BYTES",
                        help="mean bytes between samples (default 524288)")
    parser.add_argument("--top", type=int, default=15, metavar="N", help="call sites shown")
    parser.add_argument("--from", dest="source", metavar="PREFIX",
                        help="read the profile PREFIX.*.pb.gz instead of running PROGRAM")
    parser.add_argument("--secure", action="store_true", help="the secure build")
    parser.add_argument("program", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    view = args.view or "inuse"
    program = args.program[1:] if args.program[:1] == ["--"] else args.program
    out_dir = Path(args.output)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise common.ToolError(f"cannot write to the output folder {out_dir}: {error.strerror}")
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise common.ToolError(f"cannot write to the output folder {out_dir}")
    if args.source:
        binary = None
        if program:
            binary = common.check_program(program)[0]
            binary = binary if "/" in binary else subprocess.run(
                ["sh", "-c", 'command -v "$0"', binary], capture_output=True,
                text=True).stdout.strip()
        report(args.source, view, binary, out_dir, args.top)
        return 0
    common.check_program(program)
    env = common.preload_environment(common.mapalloc_library(args.secure))
    env["MAPALLOC_PROF"] = "1"
    env["MAPALLOC_PROF_FILE"] = str(out_dir.resolve() / "profile.%p")
    if args.sample:
        env["MAPALLOC_PROF_SAMPLE"] = str(args.sample)
    try:
        child = subprocess.Popen(program, env=env)
    except OSError as error:
        raise common.ToolError(f"cannot run {program[0]}: {error.strerror}", 126)
    status = child.wait()
    prefix = out_dir.resolve() / f"profile.{child.pid}"
    if not Path(f"{prefix}.heap.pb.gz").exists():
        raise common.ToolError(f"{program[0]} wrote no profile (it exited with {status} "
                               f"without running exit handlers, or did not use malloc)")
    if status != 0:
        common.note(f"{program[0]} exited with status {status}")
    report(str(prefix), view, None, out_dir, args.top, program[0])
    return 0
