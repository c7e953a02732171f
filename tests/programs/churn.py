# An allocation-heavy Python workload with deterministic output (dicts, lists, strings).
import json, random

random.seed(12345)
table = {}
for i in range(200000):
    key = "k%d" % random.randrange(50000)
    table.setdefault(key, []).append(str(i) * (i % 7))
    if i % 1000 == 0:
        for old in random.sample(sorted(table), min(100, len(table))):
            del table[old]
text = json.dumps({k: len(v) for k, v in sorted(table.items())})
words = sorted(set(text.split(",")))
print(len(table), len(text), len(words), sum(len(v) for v in table.values()))
print(sorted(table)[:5])
