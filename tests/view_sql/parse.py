"""Parses compiled ViewDefinitions with sqlglot in their dialect, for the engines that cannot run
here (BigQuery, Trino/Athena, Snowflake): every statement must be one valid statement of the
dialect. sqlglot takes any name followed by `(` as a function; for Snowflake, whose functions
differ most from the others', every function the statement calls must also be one Snowflake
documents (the list below), so that a name from another engine cannot slip through.

    python3 parse.py JOBS.json RESULTS.json

JOBS.json: [{"id": ..., "dialect": "bigquery"|"trino"|"snowflake", "sql": SQL}]; RESULTS.json:
{id: null or the problem}.
"""

import json
import re
import sys

import sqlglot
from sqlglot.errors import ErrorLevel

# Snowflake's SQL functions (docs.snowflake.com/sql-reference/functions) the compiled views may
# call, and the keywords that precede a parenthesis.
SNOWFLAKE_FUNCTIONS = {
    "ABS", "ARRAY_CAT", "ARRAY_COMPACT", "ARRAY_CONSTRUCT", "ARRAY_CONTAINS", "ARRAY_DISTINCT",
    "ARRAY_FLATTEN", "ARRAY_SIZE", "ARRAY_SLICE", "ARRAY_SORT", "ARRAY_TO_STRING", "AS_ARRAY",
    "BASE64_DECODE_BINARY", "BASE64_ENCODE", "CEIL", "CHARINDEX", "COALESCE", "EXP", "FILTER",
    "FLATTEN", "FLOOR", "GET", "GREATEST", "LAST_DAY", "LEAST", "LEFT", "LENGTH", "LN",
    "LOWER", "NULLIF", "OBJECT_CONSTRUCT", "REGEXP_INSTR", "REGEXP_REPLACE", "REGEXP_SUBSTR",
    "REPLACE", "ROUND", "RPAD", "SPLIT", "SQRT", "STRIP_NULL_VALUE", "SUBSTR", "TO_DATE",
    "TO_NUMBER", "TO_VARCHAR", "TO_VARIANT", "TRANSFORM", "TRIM", "TRUNC", "TRY_PARSE_JSON",
    "UPPER",
}
KEYWORDS = {"CAST", "AS", "IN", "AND", "OR", "NOT", "THEN", "ELSE", "WHEN", "ON", "SELECT",
            "NUMBER", "FROM", "WHERE", "VIEW", "ALL"}


def functions(sql):
    """The names called in `sql`, outside its text literals."""
    code = re.sub(r"'(?:[^'\\]|''|\\.)*'", "''", sql)
    code = re.sub(r'"(?:[^"]|"")*"', '""', code)
    return {m.upper() for m in re.findall(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*\(", code)} - KEYWORDS


jobs = json.load(open(sys.argv[1]))
results = {}
for job in jobs:
    try:
        statements = sqlglot.parse(job["sql"], read=job["dialect"], error_level=ErrorLevel.RAISE)
        statements = [s for s in statements if s is not None]
        problem = None if len(statements) == 1 else f"{len(statements)} statements"
        if problem is None and job["dialect"] == "snowflake":
            unknown = functions(job["sql"]) - SNOWFLAKE_FUNCTIONS
            if unknown:
                problem = f"not Snowflake functions: {', '.join(sorted(unknown))}"
        results[job["id"]] = problem
    except Exception as e:
        results[job["id"]] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
json.dump(results, open(sys.argv[2], "w"))
