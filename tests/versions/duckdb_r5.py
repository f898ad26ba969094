"""Runs `warehouse duckdb` statements and a `view --sql duckdb` statement over an R5 dataset in
DuckDB; prints what they give as JSON (table counts, the view's rows) for the test to compare
with a walker over the NDJSON.

    python3 duckdb_r5.py WAREHOUSE.sql VIEW.sql
"""

import json
import os
import sys

import duckdb

con = duckdb.connect()
ext = os.environ.get("DUCKDB_EXTENSION_DIRECTORY")
if ext:
    con.execute(f"SET extension_directory = '{ext}'")
    con.execute("SET autoinstall_known_extensions = false")
for s in open(sys.argv[1]).read().split(";\n\n"):
    s = "\n".join(l for l in s.split("\n") if not l.startswith("--")).strip()
    if s:
        con.execute(s)
counts = {
    t: con.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]
    for t in ["Encounter", "Patient", "NutritionIntake"]
}
class_type = con.execute(
    "SELECT data_type FROM information_schema.columns WHERE table_name = 'Encounter' AND column_name = 'class'"
).fetchone()[0]
view = open(sys.argv[2]).read().strip().rstrip(";")
view = "\n".join(l for l in view.split("\n") if not l.startswith("--"))
rows = sorted([list(r) for r in con.execute(view).fetchall()])
print(json.dumps({"counts": counts, "class_type": class_type, "rows": rows}))
