"""Runs `warehouse duckdb` statements and a `view --sql duckdb` statement over an R5 dataset in
DuckDB; prints what they give as JSON (table counts, the view's rows) for the test to compare
with a walker over the NDJSON.

    python3 duckdb_r5.py WAREHOUSE.sql VIEW.sql
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from duckdb_local import connect  # noqa: E402

con = connect()
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
