"""Reads a converted dataset's Delta tables with two readers that are not ours, delta-rs's Python
reader (`deltalake`) and DuckDB's delta extension, and checks them against the NDJSON.

Usage: python3 tests/interop/delta_check.py OUT SCHEMAS.json NDJSON_FILE...

SCHEMAS.json: {type: [top-level column names of the typed schema, partition columns last]}.
Per type: the ids of both readers are the NDJSON's (as multisets), each table's schema is the
full typed schema, and a few values (Patient gender and birthDate, an Observation's code) are
the NDJSON's.
"""
import collections
import gzip
import json
import os
import sys

from deltalake import DeltaTable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from duckdb_local import connect  # noqa: E402

out, schemas_path, inputs = sys.argv[1], sys.argv[2], sys.argv[3:]
schemas = json.load(open(schemas_path))

resources = collections.defaultdict(list)
for path in inputs:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                resources[r["resourceType"]].append(r)

con = connect("delta")

checked = 0
for t, rows in sorted(resources.items()):
    folder = os.path.join(out, t)
    want_ids = sorted(r["id"] for r in rows)

    dt = DeltaTable(folder)
    names = [f.name for f in dt.schema().fields]
    assert names == schemas[t], (t, "deltalake schema", names[:5], schemas[t][:5])
    table = dt.to_pyarrow_table(columns=["id"])
    got = sorted(table.column("id").to_pylist())
    assert got == want_ids, (t, "deltalake ids", len(got), len(want_ids))

    cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM delta_scan('{folder}')").fetchall()]
    assert cols == schemas[t], (t, "duckdb schema", cols[:5], schemas[t][:5])
    got = sorted(r[0] for r in con.execute(f"SELECT id FROM delta_scan('{folder}')").fetchall())
    assert got == want_ids, (t, "duckdb ids", len(got), len(want_ids))
    checked += 1

# Values, nested and partial columns included.
for p in resources.get("Patient", []):
    folder = os.path.join(out, "Patient")
    row = con.execute(
        f"SELECT gender, birthDate, name[1].family FROM delta_scan('{folder}') WHERE id = ?", [p["id"]]
    ).fetchone()
    want = (p.get("gender"), p.get("birthDate"), (p.get("name") or [{}])[0].get("family"))
    assert row == want, (row, want)
    t = DeltaTable(folder).to_pyarrow_table(columns=["id", "gender", "birthDate"])
    d = {r["id"]: (r["gender"], r["birthDate"]) for r in t.to_pylist()}
    assert d[p["id"]] == want[:2], (d[p["id"]], want)
obs = resources.get("Observation", [])
if obs:
    folder = os.path.join(out, "Observation")
    o = obs[len(obs) // 2]
    row = con.execute(
        f"SELECT code.coding[1].code FROM delta_scan('{folder}') WHERE id = ?", [o["id"]]
    ).fetchone()
    assert row[0] == o["code"]["coding"][0]["code"], (row, o["code"])
print(f"delta readers: deltalake and DuckDB read {checked} tables as the NDJSON has them: "
      f"{checked} passed, 0 failed")
