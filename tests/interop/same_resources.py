"""Checks a lossless round trip with a parser that is not ours (Python's json): every resource
of the NDJSON files of SRC is in BACK/<Type>.ndjson, equal as JSON with every number's text as
written ("1.50" is not "1.5"), and nothing else is. Prints the number of resources.

    python3 tests/interop/same_resources.py SRC BACK
"""

import collections
import gzip
import json
import os
import sys

src, back = sys.argv[1], sys.argv[2]


def number(text):
    return {"#number": text}


def canonical(line):
    value = json.loads(line, parse_float=number, parse_int=number)
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def lines(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [l for l in f if l.strip()]


expected = collections.defaultdict(list)
for name in sorted(os.listdir(src)):
    if ".ndjson" not in name:
        continue
    for l in lines(os.path.join(src, name)):
        c = canonical(l)
        expected[json.loads(l)["resourceType"]].append(c)

problems = []
total = 0
for t, want in sorted(expected.items()):
    path = os.path.join(back, t + ".ndjson")
    got = [canonical(l) for l in lines(path)] if os.path.exists(path) else []
    total += len(want)
    missing = collections.Counter(want) - collections.Counter(got)
    extra = collections.Counter(got) - collections.Counter(want)
    if missing or extra:
        # Counts only: resources are never printed.
        problems.append(f"{t}: {sum(missing.values())} differ or are missing, "
                        f"{sum(extra.values())} are not in the input")
for name in sorted(os.listdir(back)):
    t = name.split(".")[0]
    if name.endswith(".ndjson") and t not in expected:
        problems.append(f"{t}: in the round trip, not in the input")
if problems:
    sys.exit(f"{src}: the round trip differs:\n" + "\n".join(problems))
print(total)
