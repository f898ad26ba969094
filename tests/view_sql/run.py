"""Runs compiled ViewDefinitions (SQL of one dialect) in a real engine, the way a user would: the
dataset `convert` wrote is made tables with the full typed schema (DuckDB: the statements of
`fhir2parquet warehouse duckdb`; Spark: temporary views over the Parquet folders read with each
table's full schema), then each statement runs and its rows are written back as JSON.

    python3 run.py duckdb|spark JOBS.json RESULTS.json

JOBS.json: [{"id": ..., "dataset": DIR, "sql": SQL, "setup": ...}], the first job of each
dataset with its "setup" (DuckDB: statements; Spark: [[table, schema DDL], ...]); RESULTS.json:
{id: {"rows": [...]} or {"error": text}}.
"""

import datetime
import decimal
import json
import os
import sys

engine, jobs_path, results_path = sys.argv[1], sys.argv[2], sys.argv[3]
jobs = json.load(open(jobs_path))


def plain(v, exact=False):
    """A value as JSON: decimals as numbers (`exact`: as their text, every digit), timestamps as
    text, rows as objects."""
    if isinstance(v, decimal.Decimal):
        return format(v, "f") if exact else float(v)
    if isinstance(v, (datetime.datetime, datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, (list, tuple)):
        return [plain(x, exact) for x in v]
    if isinstance(v, dict):
        return {k: plain(x, exact) for k, x in v.items()}
    if isinstance(v, (bytes, bytearray)):
        return v.decode("latin-1")
    return v


setups = {j["dataset"]: j["setup"] for j in jobs if "setup" in j}


results = {}
if engine == "duckdb":
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    # The tables are made as `warehouse duckdb` makes them: Delta tables through the delta
    # extension, from its PyPI package (duckdb-ext-delta, built for 1.4 only: on 2.x the setup
    # reads the tables' files as plain Parquet).
    if duckdb.__version__.startswith("1."):
        import duckdb_ext

        con.execute(f"SET extension_directory = '{list(duckdb_ext.__path__)[0]}/extensions'")
        con.execute("SET autoinstall_known_extensions = false")
    current = None
    for job in jobs:
        if job["dataset"] != current:
            current = job["dataset"]
            for statement in setups[current]:
                con.execute(statement)
        try:
            cur = con.execute(job["sql"])
            names = [d[0] for d in cur.description]
            rows = [
                dict(zip(names, (plain(v, job.get("exact", False)) for v in r)))
                for r in cur.fetchall()
            ]
            results[job["id"]] = {"rows": rows}
        except Exception as e:  # the engine's error is the case's result
            results[job["id"]] = {"error": f"{type(e).__name__}: {e}"}

elif engine == "spark":
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[2]")
        .appName("fhir2parquet-view-sql")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    current = None
    for job in jobs:
        if job["dataset"] != current:
            current = job["dataset"]
            for t, schema in setups[current]:
                spark.read.schema(schema).parquet(os.path.join(current, t)).createOrReplaceTempView(t)
        try:
            rows = [
                plain(r.asDict(recursive=True), job.get("exact", False))
                for r in spark.sql(job["sql"]).collect()
            ]
            results[job["id"]] = {"rows": rows}
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            results[job["id"]] = {"error": f"{type(e).__name__}: {first}"}
    spark.stop()
else:
    sys.exit(f"unknown engine {engine}")

json.dump(results, open(results_path, "w"))
