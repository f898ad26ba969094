"""Parses compiled ViewDefinitions with sqlglot in their dialect, for the engines that cannot run
here (BigQuery, Trino/Athena): every statement must be one valid statement of the dialect.

    python3 parse.py JOBS.json RESULTS.json

JOBS.json: [{"id": ..., "dialect": "bigquery"|"trino", "sql": SQL}]; RESULTS.json: {id: null or
the parse error}.
"""

import json
import sys

import sqlglot
from sqlglot.errors import ErrorLevel

jobs = json.load(open(sys.argv[1]))
results = {}
for job in jobs:
    try:
        statements = sqlglot.parse(job["sql"], read=job["dialect"], error_level=ErrorLevel.RAISE)
        statements = [s for s in statements if s is not None]
        results[job["id"]] = None if len(statements) == 1 else f"{len(statements)} statements"
    except Exception as e:
        results[job["id"]] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
json.dump(results, open(sys.argv[2], "w"))
