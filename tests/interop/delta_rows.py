"""Reads a Patient Delta table with readers that are not ours and prints, per reader, each id
with its first name's family as JSON: {"deltalake": {id: family}, "duckdb": {...}}.

Usage: python3 tests/interop/delta_rows.py TABLE_FOLDER [plain]

deltalake: delta-rs's Python reader, through its SQL engine (QueryBuilder: the reader of
deltalake that applies deletion vectors). duckdb: DuckDB's delta extension (delta_scan).
With `plain`, also DuckDB's read_parquet over every Parquet file of the folder ("parquet"):
what an engine that reads the folder as plain Parquet sees.
"""
import json
import os
import sys

import pyarrow as pa
from deltalake import DeltaTable, QueryBuilder

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from duckdb_local import connect  # noqa: E402

folder = sys.argv[1]
plain = len(sys.argv) > 2 and sys.argv[2] == "plain"
query = "SELECT id, coalesce(name[1].family, '') AS family FROM {}"

out = {}
table = pa.table(
    QueryBuilder()
    .register("patient", DeltaTable(folder))
    .execute("SELECT id, coalesce(name[1]['family'], '') AS family FROM patient")
    .read_all()
)
out["deltalake"] = dict(zip(table.column("id").to_pylist(), table.column("family").to_pylist()))

con = connect("delta")
rows = con.execute(query.format(f"delta_scan('{folder}')")).fetchall()
out["duckdb"] = dict(rows)
if plain:
    rows = con.execute(
        query.format(f"read_parquet('{folder}/**/*.parquet', union_by_name = true)")
    ).fetchall()
    out["parquet"] = dict(rows)
    out["parquet_rows"] = len(rows)
print(json.dumps(out))
