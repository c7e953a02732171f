"""py_churn.py — allocation-heavy Python workload with deterministic output.

Used by stress/real_programs.sh: run once without and once with mapalloc preloaded, the two
outputs must be identical. CPython allocates objects above 512 bytes, and its arenas, with
malloc, and every dict/list resize goes through realloc, so dicts, lists, strings, bytes and
big integers of many sizes churn the allocator. Everything printed is derived from contents
(sha256 digests, sorted keys), never from addresses or str hash order.

usage: python3 py_churn.py [SCALE]     (default 1; 0.2 or so for a quick run)
"""
import hashlib
import json
import random
import sys


def digest(obj):
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


def main():
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    n = max(1000, int(100000 * scale))
    rng = random.Random(12345)
    print("dict", *dict_churn(rng, n))
    print("list", *list_churn(rng, n))
    print("string", *string_churn(rng, n // 10))
    print("bigint", *bigint_churn(n // 5))
    objs = [{"id": i, "tags": ["t%d" % (i % 17)] * (i % 9), "blob": bytes(i % 3000)} for i in range(n // 5)]
    text = json.dumps([{k: (v if k != "blob" else len(v)) for k, v in o.items()} for o in objs])
    print("json", len(text), hashlib.sha256(text.encode()).hexdigest()[:16])


if __name__ == "__main__":
    main()
