"""Shared material of the Python package's tests: the sample export that ships in examples/,
the test data in ../shared, an NDJSON reader that knows nothing of fhir2parquet (the answers
come from it), and a dataset converted once."""

import gzip
import importlib
import json
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "synthea-sample"
SHARED = ROOT.parent / "shared"


def need(module: str):
    """Imports a test tool; without it the test fails under CI and is skipped elsewhere."""
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module)


def ndjson(folder: pathlib.Path, resource_type: str) -> list:
    """Every resource of a type in a folder's NDJSON files (``Type.ndjson``, ``Type.000.ndjson``,
    gzipped or not), parsed with the json module."""
    out = []
    for path in sorted(folder.iterdir()):
        name = path.name
        if not (name.startswith(resource_type + ".") and ".ndjson" in name):
            continue
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            out.extend(json.loads(line) for line in f if line.strip())
    return out


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> pathlib.Path:
    """The sample export, converted once for the tests that only read."""
    import fhir2parquet

    out = tmp_path_factory.mktemp("dataset") / "out"
    fhir2parquet.convert(SAMPLE, out, progress=False)
    return out


@pytest.fixture(scope="session")
def big_ndjson(tmp_path_factory) -> pathlib.Path:
    """A plain NDJSON file of 120,000 Observations (about 90 MB): the sample's, repeated with
    ids of their own, for the tests of progress, interruption and bounded memory."""
    src = ndjson(SAMPLE, "Observation")
    path = tmp_path_factory.mktemp("big") / "Observation.ndjson"
    with open(path, "w", encoding="utf-8") as f:
        for k in range(120_000):
            r = dict(src[k % len(src)])
            r["id"] = f"{r['id']}-{k}"
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
    return path
