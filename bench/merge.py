"""Merge benchmark: a change set of 1% of the resources (every 100th line of each file, given a
newer meta.lastUpdated) applied with `convert --merge` to a dataset converted from the full
input. Prints the full convert's and the merge's seconds and the bytes each wrote: every file
they added to the dataset (Parquet, deletion vectors, Delta log), the run record aside.

usage: python3 bench/merge.py BINARY INPUT_DIR WORK_DIR
"""
import json
import os
import shutil
import subprocess
import sys
import time

exe, src, work = sys.argv[1], sys.argv[2], sys.argv[3]
out = os.path.join(work, "merge-out")
changes = os.path.join(work, "merge-changes")
shutil.rmtree(out, ignore_errors=True)
shutil.rmtree(changes, ignore_errors=True)
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
    t = time.monotonic()
    subprocess.run([exe] + args, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - t


full = run(["convert", src, "-o", out, "-q"])
full_bytes = size(out)
merge = run(["convert", changes, "-o", out, "-q", "--merge"])
merge_bytes = size(out) - full_bytes
record = json.load(open(os.path.join(out, "_fhir2parquet.json")))
updated = sum((t.get("merge") or {}).get("updated", 0) for t in record["types"].values())
print(f"change set: {n} resources ({updated} updated)")
print(f"full convert: {full:.2f} s, {full_bytes / 1e6:.1f} MB")
print(f"merge:        {merge:.2f} s ({100 * merge / full:.0f}% of the convert), "
      f"{merge_bytes / 1e6:.1f} MB written ({100 * merge_bytes / full_bytes:.0f}%)")
