"""Merge benchmark: a change set of 1% of the resources (every 100th line of each file, given a
newer meta.lastUpdated) applied with `convert --merge` to a dataset converted from the full
input. Prints the full convert's and the merge's seconds (medians of ROUNDS runs, each merge
into a fresh copy of the converted dataset) and the bytes each wrote: every file they added to
the dataset (Parquet, deletion vectors, Delta log), the run record aside.

usage: python3 bench/merge.py BINARY INPUT_DIR WORK_DIR [ROUNDS]   (ROUNDS: 5)
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

exe, src, work = sys.argv[1], sys.argv[2], sys.argv[3]
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 5
out = os.path.join(work, "merge-out")
base = os.path.join(work, "merge-base")
changes = os.path.join(work, "merge-changes")
for d in (out, base, changes):
    shutil.rmtree(d, ignore_errors=True)
os.makedirs(changes)

n = 0
for name in sorted(os.listdir(src)):
    if not name.endswith(".ndjson"):
        continue
    with open(os.path.join(src, name)) as f, open(os.path.join(changes, name), "w") as w:
        for i, line in enumerate(f):
            if i % 100 == 50 and line.strip():
                r = json.loads(line)
                r.setdefault("meta", {})["lastUpdated"] = "2030-01-01T00:00:00Z"
                w.write(json.dumps(r) + "\n")
                n += 1


def size(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            if f != "_fhir2parquet.json":
                total += os.path.getsize(os.path.join(root, f))
    return total


def run(args):
    # Written files from an earlier step are on disk first: each run is timed alone.
    os.sync()
    t = time.monotonic()
    subprocess.run([exe] + args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t


fulls, merges = [], []
for _ in range(rounds):
    shutil.rmtree(base, ignore_errors=True)
    fulls.append(run(["convert", src, "-o", base, "-q"]))
for _ in range(rounds):
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(base, out)
    merges.append(run(["convert", changes, "-o", out, "-q", "--merge"]))
full, merge = statistics.median(fulls), statistics.median(merges)
print("runs:", " ".join(f"{x:.2f}" for x in fulls), "|", " ".join(f"{x:.2f}" for x in merges))
full_bytes = size(base)
merge_bytes = size(out) - full_bytes
record = json.load(open(os.path.join(out, "_fhir2parquet.json")))
updated = sum((t.get("merge") or {}).get("updated", 0) for t in record["types"].values())
print(f"change set: {n} resources ({updated} updated), {rounds} rounds")
print(f"full convert: {full:.2f} s (median; {min(fulls):.2f}-{max(fulls):.2f}), "
      f"{full_bytes / 1e6:.1f} MB")
print(f"merge:        {merge:.2f} s (median; {min(merges):.2f}-{max(merges):.2f}), "
      f"{100 * merge / full:.1f}% of the convert; "
      f"{merge_bytes / 1e6:.1f} MB written ({100 * merge_bytes / full_bytes:.1f}%)")
