# An allocation-heavy Python program for the benchmark: dicts, lists, strings, small objects,
# deterministic output. Usage: python3 python_workload.py SCALE
import sys


class Record:
    __slots__ = ("key", "values", "label")

    def __init__(self, key, values, label):
        self.key = key
        self.values = values
        self.label = label


def main(scale):
    state = 12345
    checksum = 0
    for round_number in range(scale):
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


main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
