"""Times the example queries: fhir2parquet's SQL on its Parquet, DuckDB on the same Parquet, and
DuckDB on the raw NDJSON. Usage: python3 bench/queries.py OUT INPUT_DIR THREADS"""
import glob
import os
import re
import subprocess
import sys
import time

import duckdb

out, src, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
binary = os.path.join(root, "target", "release", "fhir2parquet")

def best(f, n=3):
    times = []
    for _ in range(n):
        t = time.time()
        f()
        times.append(time.time() - t)
    return min(times)

def duck(sql, source):
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    con.execute("SET TimeZone = 'UTC'")
    def table(m):
        t = m.group(1)
        if source == "parquet":
            return f"read_parquet('{out}/{t}/**/*.parquet', hive_partitioning = true)"
        return f"read_ndjson('{src}/{t}.ndjson', maximum_object_size = 268435456)"
    q = re.sub(r"\{(\w+)\}", table, sql)
    return lambda: con.execute(q).fetchall()

def in_session(paths, n=3):
    """Each query's best time inside one shell session (\\timing), like DuckDB's connection."""
    script = "\\timing\n" + "".join(open(p).read() + "\n" for p in paths) * n
    r = subprocess.run([binary, "sql", out, "--format", "csv", "-q"], input=script, text=True,
                       check=True, capture_output=True)
    secs = [float(x) for x in re.findall(r"row\(s\) in ([0-9.]+)s", r.stderr)]
    assert len(secs) == len(paths) * n, r.stderr
    return [min(secs[i::len(paths)]) for i in range(len(paths))]

paths = sorted(glob.glob(os.path.join(root, "examples", "queries", "*.sql")))
session = in_session(paths)
print(f"{'query':<44} {'ours s':>8} {'ours in session s':>18} {'duckdb parquet s':>17} {'duckdb ndjson s':>16}")
totals = [0.0, 0.0, 0.0, 0.0]
for qi, path in enumerate(paths):
    name = os.path.basename(path)
    num = name[:2]
    ours = best(lambda: subprocess.run([binary, "sql", out, "-f", path, "--format", "csv", "-q"], check=True, capture_output=True))
    dsql = open(os.path.join(here, "duckdb_queries", f"{num}.sql")).read()
    try:
        dp = best(duck(dsql, "parquet"))
    except Exception as e:
        dp = float("nan"); print("  duckdb parquet failed:", str(e).splitlines()[0])
    try:
        dn = best(duck(dsql, "ndjson"), n=1)
    except Exception as e:
        dn = float("nan"); print("  duckdb ndjson failed:", str(e).splitlines()[0])
    for i, v in enumerate([ours, session[qi], dp, dn]):
        totals[i] += v
    print(f"{name:<44} {ours:8.3f} {session[qi]:18.3f} {dp:17.3f} {dn:16.3f}")
print(f"{'total':<44} {totals[0]:8.3f} {totals[1]:18.3f} {totals[2]:17.3f} {totals[3]:16.3f}")
