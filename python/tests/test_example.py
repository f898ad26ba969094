"""examples/python/patient_features.py runs on the sample, and its feature table holds what the
NDJSON says."""

import collections
import csv
import subprocess
import sys

from conftest import ROOT, SAMPLE, need, ndjson


def test_the_data_science_example_runs_and_its_features_are_right(tmp_path):
    need("sklearn")
    need("matplotlib")
    need("pandas")
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "python" / "patient_features.py"), str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "leave-one-out accuracy" in done.stdout
    rows = {r["id"]: r for r in csv.DictReader(open(tmp_path / "features.csv"))}
    assert set(rows) == {p["id"] for p in ndjson(SAMPLE, "Patient")}
    encounters = collections.Counter(
        e["subject"]["reference"].split(":")[-1].split("/")[-1] for e in ndjson(SAMPLE, "Encounter")
    )
    assert {i: int(float(r["encounters"])) for i, r in rows.items()} == {
        i: encounters.get(i, 0) for i in rows
    }
    prediabetes = {
        c["subject"]["reference"].split(":")[-1].split("/")[-1]
        for c in ndjson(SAMPLE, "Condition")
        if any(
            x.get("system") == "http://snomed.info/sct" and x.get("code") == "15777000"
            for x in c["code"].get("coding", [])
        )
    }
    assert {i for i, r in rows.items() if r["prediabetes"] == "True"} == prediabetes
    assert (tmp_path / "age_bmi.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
