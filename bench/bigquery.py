"""Times the BigQuery query corpus (tests/bigquery/*.sql): each query as written in fhir2parquet's
shell (best of 3 inside one session), beside its reference query (the DuckDB form of the same
question) run by DuckDB over the same Parquet files. Usage: python3 bench/bigquery.py OUT THREADS"""
import glob
import os
import re
import subprocess
import sys
import time

import duckdb

out, threads = sys.argv[1], int(sys.argv[2])
here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
binary = os.path.join(root, "target", "release", "fhir2parquet")
MARK = "-- reference: DuckDB over the NDJSON"

paths = sorted(glob.glob(os.path.join(root, "tests", "bigquery", "*.sql")))
parts = [open(p).read().split(MARK, 1) for p in paths]

# Ours: every query three times in one session; each query's best time.
script = "\\timing\n" + "".join(bq.strip() + ";\n" for bq, _ in parts) * 3
r = subprocess.run([binary, "sql", out, "--format", "csv", "-q"], input=script, text=True,
                   check=True, capture_output=True)
secs = [float(x) for x in re.findall(r"row\(s\) in ([0-9.]+)s", r.stderr)]
assert len(secs) == len(paths) * 3, r.stderr
ours = [min(secs[i::len(paths)]) for i in range(len(paths))]

con = duckdb.connect()
con.execute(f"SET threads = {threads}")
con.execute("SET TimeZone = 'UTC'")
for d in sorted(os.listdir(out)):
    if os.path.isdir(os.path.join(out, d)) and not d.startswith("_"):
        con.execute(f"CREATE VIEW {d} AS SELECT * FROM read_parquet('{out}/{d}/**/*.parquet', "
                    "hive_partitioning = true, union_by_name = true)")
con.execute("CREATE MACRO ref_id(r, t) AS CASE WHEN r.reference LIKE t || '/%' "
            "THEN split_part(r.reference, '/', 2) END")

def best(sql, n=3):
    times = []
    for _ in range(n):
        t = time.time()
        con.execute(sql).fetchall()
        times.append(time.time() - t)
    return min(times)

print(f"{'query':<52} {'ours s':>8} {'duckdb s':>9}")
total = [0.0, 0.0]
for path, (_, ref), o in zip(paths, parts, ours):
    try:
        d = best(ref)
    except Exception as e:  # noqa: BLE001 - reported per query
        d = float("nan")
        print("  duckdb failed:", str(e).splitlines()[0])
    total[0] += o
    total[1] += d
    print(f"{os.path.basename(path):<52} {o:8.3f} {d:9.3f}")
print(f"{'total':<52} {total[0]:8.3f} {total[1]:9.3f}")
