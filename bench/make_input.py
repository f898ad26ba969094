"""Generates a large bulk export from the Synthea data: copies with rewritten ids and references.

Usage: python3 bench/make_input.py SRC_DIR... --out DIR --mb 520
Every UUID in a copy gets the copy's suffix, so ids and the references to them stay consistent.
"""
import argparse
import os
import re

UUID = re.compile(rb"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-)([0-9a-f]{12})")

ap = argparse.ArgumentParser()
ap.add_argument("src", nargs="+")
ap.add_argument("--out", required=True)
ap.add_argument("--mb", type=int, default=520)
a = ap.parse_args()
os.makedirs(a.out, exist_ok=True)
files = {}
for d in a.src:
    for name in sorted(os.listdir(d)):
        if name.endswith(".ndjson"):
            t = name.split(".")[0]
            files.setdefault(t, []).append(open(os.path.join(d, name), "rb").read())
outs = {t: open(os.path.join(a.out, f"{t}.ndjson"), "wb") for t in files}
written, copy = 0, 0
while written < a.mb * 1_000_000:
    tag = b"%012x" % copy
    for t, blobs in files.items():
        for blob in blobs:
            # Replace the last 12 hex digits of every UUID with a per-copy value mixed into it.
            data = UUID.sub(lambda m: m.group(1) + (b"%012x" % ((int(m.group(2), 16) + copy * 7919) % (1 << 48))), blob)
            outs[t].write(data if data.endswith(b"\n") else data + b"\n")
            written += len(data)
    copy += 1
for f in outs.values():
    f.close()
print(f"{written / 1e6:.0f} MB in {copy} copies")
