"""python_workload.py — mapalloc's one allocation-heavy Python program, in three modes.

Every mode prints a deterministic result (derived from contents, never from addresses or str
hash order), so that a run under one allocator can be compared with a run under another.
CPython allocates objects above 512 bytes, and its arenas, with malloc, and every dict or list
resize goes through realloc (with PYTHONMALLOC=malloc every object comes from malloc).

  records  (default) dicts, lists, strings and small objects with __slots__: the benchmark's
           python3 row (scripts/bench.py), `mapalloc compare`, and tests/trace_test.sh's cost;
           SCALE rounds.
  json     dicts, lists, strings, JSON encoding and decoding, sorting, sets and churn of small
           objects: the benchmark's python3-malloc row, run with PYTHONMALLOC=malloc and
           PYTHONHASHSEED=0; SCALE rounds.
  mixed    dicts, lists and strings of many sizes, big integers and JSON, with sha256 digests:
           stress/real_programs.sh and tests/preload_smoke.sh; SCALE 1 is the full size (0.3
           for a quick run).

usage: python3 scripts/bench/python_workload.py [--mode records|json|mixed] [SCALE]

Each mode imports only the modules it uses (and no argparse), so that the benchmark rows run
the same program as before the modes were merged.
"""
import sys


# ---- records -------------------------------------------------------------------------------

class Record:
    __slots__ = ("key", "values", "label")

    def __init__(self, key, values, label):
        self.key = key
        self.values = values
        self.label = label


def records_mode(scale):
    state = 12345
    checksum = 0
    for round_number in range(int(scale)):
        table = {}
        for i in range(60000):
            state = (state * 1103515245 + 12345) & 0x7FFFFFFF
            key = "key%d" % (state % 20000)
            record = table.get(key)
            if record is None:
                table[key] = Record(key, [i], "r" * (state % 40))
            else:
                record.values.append(i)
                if len(record.values) > 8:
                    record.values = record.values[4:]
        words = " ".join(r.label + r.key for r in table.values()).split()
        counts = {}
        for word in words:
            counts[word[:6]] = counts.get(word[:6], 0) + 1
        checksum += sum(len(v.values) for v in table.values()) + len(counts)
        checksum += len(sorted(words, key=lambda w: (len(w), w))[-1])
    print(checksum)


# ---- json ----------------------------------------------------------------------------------

def lcg(state):
    """The next state of a linear congruential generator (deterministic, no module state)."""
    return (state * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF


def make_records(state, count):
    """`count` small dicts with strings, lists and nested dicts; returns (records, state)."""
    records = []
    for i in range(count):
        state = lcg(state)
        records.append({"id": i, "name": "user%d" % (state >> 40), "group": "g%d" % (state % 97),
                        "score": (state >> 20) % 10000 / 100,
                        "tags": ["t%d" % ((state >> s) % 50) for s in range(0, 24, 6)],
                        "address": {"city": "c%d" % ((state >> 8) % 500), "zip": "%05d" % (state % 99991)}})
    return records, state


def small_object_churn(state, rounds):
    """Small objects created and dropped: tuples, lists, short strings in a bounded dict."""
    live, total = {}, 0
    for _ in range(rounds):
        state = lcg(state)
        key = (state >> 33) % 5000
        if key in live:
            total += len(live.pop(key)[1])
        else:
            live[key] = (key, [str(key)] * ((state >> 50) % 8 + 1), "x" * ((state >> 20) % 60))
    return total + len(live), state


def json_round(state):
    """One round of every kind of work; returns (checksum, state)."""
    import json
    records, state = make_records(state, 12000)
    text = json.dumps(records)
    decoded = json.loads(text)
    by_group = {}
    for record in decoded:
        by_group.setdefault(record["group"], []).append(record)
    ordered = sorted(decoded, key=lambda r: (r["group"], -r["score"], r["name"]))
    tags = set()
    for record in ordered:
        tags.update(record["tags"])
        record["label"] = "%s/%s/%s" % (record["group"], record["name"], record["address"]["city"])
    words = " ".join(r["label"] for r in ordered).split("/")
    distinct = len(set(words))
    kept, state = small_object_churn(state, 150000)
    checksum = len(text) + len(by_group) + len(tags) + distinct + kept
    checksum += sum(len(v) for v in by_group.values()) + len(ordered[0]["label"])
    return checksum, state


def json_mode(scale):
    state, checksum = 2024, 0
    for _ in range(int(scale)):
        value, state = json_round(state)
        checksum += value
    print(checksum)


# ---- mixed ---------------------------------------------------------------------------------

def digest(obj):
    import hashlib
    import json
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def dict_churn(rng, n):
    d = {}
    for i in range(n):
        key = "k%d-%s" % (rng.randrange(n), "x" * rng.randrange(40))
        if key in d and rng.random() < 0.3:
            del d[key]
        else:
            d[key] = [i, str(i) * rng.randrange(1, 20), {"n": i}]
    # rebuild a few times: big resizes up and down
    for _ in range(3):
        d = {k: v for k, v in d.items() if len(v) % 3 != 0}
        d.update({"r%d" % i: [i] * (i % 50) for i in range(n // 4)})
    return len(d), digest(sorted(d.items())[:2000])


def list_churn(rng, n):
    lists = [[] for _ in range(256)]
    for i in range(n * 4):
        lst = lists[rng.randrange(256)]
        if lst and rng.random() < 0.4:
            del lst[rng.randrange(len(lst)):]
        else:
            lst.extend(range(rng.randrange(1, 300)))
    total = sum(len(x) for x in lists)
    return total, digest([sum(x) for x in lists])


def string_churn(rng, n):
    import hashlib
    parts = []
    for i in range(n):
        s = "".join(chr(97 + (i * 7 + k) % 26) for k in range(rng.randrange(1, 2000)))
        parts.append(s.upper() if i % 2 else s)
        if len(parts) > 500:
            joined = "|".join(parts)
            parts = joined.split("|")[::3]
    text = " ".join(parts)
    words = text.split()
    big = b"".join(w.encode() for w in words) * 3
    return len(text), len(words), hashlib.sha256(big).hexdigest()[:16]


def bigint_churn(n):
    a, b = 1, 1
    for _ in range(n):
        a, b = b, a + b
    f = 1
    for i in range(1, n // 4):
        f *= i
    return b.bit_length(), hex(f)[:20], str(b % 1000000007), str(f % 998244353)


def mixed_mode(scale):
    import hashlib
    import json
    import random
    n = max(1000, int(100000 * scale))
    rng = random.Random(12345)
    print("dict", *dict_churn(rng, n))
    print("list", *list_churn(rng, n))
    print("string", *string_churn(rng, n // 10))
    print("bigint", *bigint_churn(n // 5))
    objs = [{"id": i, "tags": ["t%d" % (i % 17)] * (i % 9), "blob": bytes(i % 3000)} for i in range(n // 5)]
    text = json.dumps([{k: (v if k != "blob" else len(v)) for k, v in o.items()} for o in objs])
    print("json", len(text), hashlib.sha256(text.encode()).hexdigest()[:16])


MODES = {"records": records_mode, "json": json_mode, "mixed": mixed_mode}


def main(argv):
    usage = "usage: python_workload.py [--mode %s] [SCALE]" % "|".join(MODES)
    mode, scale = "records", 1.0
    args = list(argv)
    try:
        if args[:1] == ["--mode"] and len(args) >= 2:
            mode = args[1]
            del args[:2]
        elif args[:1] and args[0].startswith("--mode="):
            mode = args.pop(0)[len("--mode="):]
        if args:
            scale = float(args.pop(0))
    except ValueError:
        args = ["?"]
    if mode not in MODES or args:
        sys.exit(usage)
    MODES[mode](scale)


if __name__ == "__main__":
    main(sys.argv[1:])
