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


def test_the_notebook_runs_as_the_script_does(tmp_path):
    """examples/python/patient_features.ipynb: its code cells, in order, from a folder whose
    parent holds the sample and the views, as examples/python's does."""
    import json

    need("sklearn")
    need("matplotlib")
    notebook = json.loads((ROOT / "examples" / "python" / "patient_features.ipynb").read_text())
    code = "\n".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code")
    for name in ("synthea-sample", "views"):
        (tmp_path / name).symlink_to(ROOT / "examples" / name)
    (tmp_path / "python").mkdir()
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path / "python", capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    features = list(csv.DictReader(open(tmp_path / "python" / "python-example" / "features.csv")))
    assert len(features) == len(ndjson(SAMPLE, "Patient"))
    assert (tmp_path / "python" / "python-example" / "age_bmi.png").exists()
