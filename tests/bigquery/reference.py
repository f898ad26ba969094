"""The reference answers of the BigQuery query corpus: each file's DuckDB query (after the line
`-- reference: DuckDB over the NDJSON`) run on the NDJSON files themselves, read by DuckDB's JSON
reader (dates kept as the text they are), never on our Parquet.

usage: reference.py NDJSON_DIR FILE.sql... ; prints {file name: {"rows": [[text, ...]]} or
{"error": message}} as JSON, each value as text (NULL: null).
"""

import datetime
import decimal
import json
import os
import sys

import duckdb

MARK = "-- reference: DuckDB over the NDJSON"


def text(v):
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, datetime.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return v.isoformat()
    if isinstance(v, (datetime.date, decimal.Decimal, int, float)):
        return str(v) if not isinstance(v, datetime.date) else v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join("" if x is None else text(x) for x in v) + "]"
    return str(v)


def main():
    data, files = sys.argv[1], sys.argv[2:]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for f in sorted(os.listdir(data)):
        if not f.endswith(".ndjson"):
            continue
        table = f[: -len(".ndjson")]
        # The formats no text matches keep dates and times as the strings they are.
        con.execute(
            f"CREATE VIEW {table} AS SELECT * REPLACE (CAST(id AS VARCHAR) AS id) FROM "
            f"read_json('{os.path.join(data, f)}', format = 'newline_delimited', "
            f"sample_size = -1, dateformat = '%no', timestampformat = '%no')"
        )
    con.execute(
        "CREATE MACRO ref_id(r, t) AS CASE WHEN r.reference LIKE t || '/%' "
        "THEN split_part(r.reference, '/', 2) END"
    )
    out = {}
    for path in files:
        sql = open(path).read().split(MARK, 1)[1]
        try:
            rows = con.execute(sql).fetchall()
            out[os.path.basename(path)] = {"rows": [[text(v) for v in r] for r in rows]}
        except Exception as e:  # noqa: BLE001 - reported per file
            out[os.path.basename(path)] = {"error": str(e)}
    json.dump(out, sys.stdout)


main()
