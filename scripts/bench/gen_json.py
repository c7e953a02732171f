# Writes a large JSON array of records for the jq benchmark (fixed seed: the same file every
# time). Usage: python3 gen_json.py RECORDS > records.json (about 210 bytes per record)
import json
import random
import sys

count = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
rng = random.Random(20240611)
words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
         "juliett", "kilo", "lima", "mike", "november", "oscar", "papa"]
records = []
for i in range(count):
    records.append({
        "id": i,
        "name": f"{rng.choice(words)}-{rng.randrange(100000):05d}",
        "group": f"g{rng.randrange(200)}",
        "score": rng.randrange(1000000) / 100,
        "active": rng.random() < 0.7,
        "tags": rng.sample(words, rng.randrange(1, 5)),
        "address": {"city": rng.choice(words).title(), "zip": f"{rng.randrange(100000):05d}"},
        "history": [rng.randrange(1000) for _ in range(rng.randrange(0, 6))],
    })
json.dump(records, sys.stdout, separators=(",", ":"))
sys.stdout.write("\n")
