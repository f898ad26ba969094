"""`batches` reads a table larger than what it holds at once: its peak memory stays a small part
of the table's size, where `table` holds all of it."""

import json
import subprocess
import sys

import pytest

import fhir2parquet as f2p

READ = """
import json, sys
import fhir2parquet as f2p
dataset, mode = sys.argv[1], sys.argv[2]
f2p.table(dataset, "Observation", columns=["id"])  # the engine's start-up allocations
def peak():
    # The process's peak resident memory (ru_maxrss would start at the parent's, the test's).
    with open("/proc/self/status") as f:
        hwm = next(line for line in f if line.startswith("VmHWM:"))
    return int(hwm.split()[1]) * 1024
before = peak()
if mode == "table":
    nbytes = f2p.table(dataset, "Observation").nbytes
else:
    nbytes = 0
    for batch in f2p.batches(dataset, "Observation"):
        nbytes += batch.nbytes
print(json.dumps({"grew": peak() - before, "nbytes": nbytes}))
"""


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, big_ndjson):
    """The 120,000 Observations, and their first 40,000: one table three times another."""
    root = tmp_path_factory.mktemp("memory")
    third = root / "Observation.ndjson"
    with open(big_ndjson, encoding="utf-8") as src, open(third, "w", encoding="utf-8") as dst:
        for _, line in zip(range(40_000), src):
            dst.write(line)
    out = {}
    for name, src in (("small", third), ("large", big_ndjson)):
        out[name] = root / name
        f2p.convert(src, out[name], progress=False)
    return out


def read(dataset, mode):
    done = subprocess.run(
        [sys.executable, "-c", READ, str(dataset), mode], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_batches_hold_the_same_few_batches_whatever_the_tables_size(datasets):
    whole = {k: read(d, "table") for k, d in datasets.items()}
    streamed = {k: read(d, "batches") for k, d in datasets.items()}
    print({"table": whole, "batches": streamed})
    assert streamed["large"]["nbytes"] == whole["large"]["nbytes"] > 150_000_000
    # The whole table's memory follows its size (measured: 112 MB, then 255 MB)...
    assert whole["large"]["grew"] > 1.8 * whole["small"]["grew"], whole
    # ...the stream's does not: a few batches per partition at once (86 MB, then 106 MB).
    assert streamed["large"]["grew"] < 1.5 * streamed["small"]["grew"], streamed
    assert streamed["large"]["grew"] < 0.6 * whole["large"]["grew"], (streamed, whole)
