"""Reads a converted dataset with DuckDB and pyarrow and checks counts and typed values.

Usage: python3 tests/interop/check.py OUT NDJSON_DIR
"""
import decimal
import glob
import json
import os
import sys

import duckdb
import pyarrow.dataset as ds
import pyarrow as pa

out, src = sys.argv[1], sys.argv[2]

def ndjson(t):
    with open(os.path.join(src, t + ".ndjson")) as f:
        return [json.loads(l, parse_float=decimal.Decimal) for l in f if l.strip()]

observations = ndjson("Observation")
patients = ndjson("Patient")
obs = next(o for o in observations if "valueQuantity" in o and "issued" in o)

con = duckdb.connect()
def q(sql):
    return con.execute(sql).fetchall()

obs_glob = os.path.join(out, "Observation", "**", "*.parquet")
pat_glob = os.path.join(out, "Patient", "*.parquet")
# Counts (Observation is Hive-partitioned by effective year).
assert q(f"SELECT count(*) FROM read_parquet('{obs_glob}', hive_partitioning=true)")[0][0] == len(observations)
assert q(f"SELECT count(*) FROM read_parquet('{pat_glob}')")[0][0] == len(patients)
# A decimal: exact, as DECIMAL(38,18).
row = q(f"SELECT valueQuantity.value, typeof(valueQuantity.value), issued, typeof(issued), code.coding[1].code, effective_year "
        f"FROM read_parquet('{obs_glob}', hive_partitioning=true) WHERE id = '{obs['id']}'")[0]
assert row[0] == obs["valueQuantity"]["value"], (row[0], obs["valueQuantity"]["value"])
assert row[1] == "DECIMAL(38,18)", row[1]
# An instant: a UTC timestamp.
assert row[3] == "TIMESTAMP WITH TIME ZONE", row[3]
from datetime import datetime
want = datetime.fromisoformat(obs["issued"])
assert row[2].timestamp() == want.timestamp(), (row[2], want)
# A nested coding.
assert row[4] == obs["code"]["coding"][0]["code"]
assert str(row[5]) == obs["effectiveDateTime"][:4]
# A date: text and companion timestamp.
p = patients[0]
prow = q(f"SELECT birthDate, birthDate_ts FROM read_parquet('{pat_glob}') WHERE id = '{p['id']}'")[0]
assert prow[0] == p["birthDate"]
assert prow[1].strftime("%Y-%m-%d") == p["birthDate"]

# pyarrow reads the same files.
d = ds.dataset(os.path.join(out, "Observation"), format="parquet", partitioning="hive")
t = d.to_table()
assert t.num_rows == len(observations)
vq = t.schema.field("valueQuantity").type
assert vq.field("value").type == pa.decimal128(38, 18)
assert t.schema.field("issued").type == pa.timestamp("us", tz="UTC")
pt = ds.dataset(os.path.join(out, "Patient"), format="parquet").to_table()
assert pt.num_rows == len(patients)
names = pt.column("name").to_pylist()
assert any(n and n[0]["family"] for n in names)
meta = pt.schema.metadata or {}
files = glob.glob(os.path.join(out, "Patient", "*.parquet"))
import pyarrow.parquet as pq
kv = pq.ParquetFile(files[0]).metadata.metadata
assert kv[b"fhir.version"] == b"4.0.1", kv
print("interop: DuckDB and pyarrow read the dataset: 2 passed, 0 failed")
