# A malloc-heavy Python program for the benchmark's python3-malloc row, run with
# PYTHONMALLOC=malloc (every object then comes from malloc, not from pymalloc's arenas) and
# PYTHONHASHSEED=0: dicts, lists, strings, JSON encoding and decoding, sorting, sets and churn
# of small objects; deterministic output. Usage: python3 python_malloc_workload.py SCALE
import json
import sys


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


def churn(state, rounds):
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


def one_round(state):
    """One round of every kind of work; returns (checksum, state)."""
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
    kept, state = churn(state, 150000)
    checksum = len(text) + len(by_group) + len(tags) + distinct + kept
    checksum += sum(len(v) for v in by_group.values()) + len(ordered[0]["label"])
    return checksum, state


def main(scale):
    state, checksum = 2024, 0
    for _ in range(scale):
        value, state = one_round(state)
        checksum += value
    print(checksum)


main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
