"""Parses the statements `fhir2parquet warehouse ENGINE` printed with a parser that is not ours,
for engines that cannot run here: sqlglot in the engine's dialect (athena, snowflake), Spark's
own SQL parser (spark). Every statement must parse as what it is (sqlglot: not its fallback of
an opaque command), except statements starting with a prefix given after the script.

    python3 parse.py athena|snowflake|spark STATEMENTS.sql [UNPARSED_PREFIX...]

Prints, per statement, the kind of plan it parsed to and (CREATE TABLE) its table format and
location, one JSON object per line.
"""

import json
import sys

engine, script, unparsed = sys.argv[1], sys.argv[2], sys.argv[3:]
statements = []
for s in open(script).read().split(";\n\n"):
    s = "\n".join(l for l in s.split("\n") if not l.startswith("--")).strip()
    if s:
        statements.append(s)

if engine == "spark":
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[1]")
        .appName("fhir2parquet-parse")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("OFF")
    parser = spark._jsparkSession.sessionState().sqlParser()
    for s in statements:
        plan = parser.parsePlan(s)
        out = {"kind": plan.getClass().getSimpleName()}
        if out["kind"] == "CreateTable":
            spec = plan.tableSpec()
            out["format"] = spec.provider().get() if spec.provider().isDefined() else None
            out["location"] = spec.location().get() if spec.location().isDefined() else None
            out["columns"] = plan.tableSchema().size()
        print(json.dumps(out))
    spark.stop()
else:
    import sqlglot
    from sqlglot import exp

    for s in statements:
        tree = sqlglot.parse_one(s, read=engine, error_level=sqlglot.ErrorLevel.RAISE)
        if isinstance(tree, exp.Command):
            assert any(s.startswith(p) for p in unparsed), f"sqlglot cannot parse: {s[:200]}"
            print(json.dumps({"kind": "unparsed"}))
            continue
        out = {"kind": type(tree).__name__}
        if isinstance(tree, exp.Create):
            props = tree.args.get("properties")
            props = props.expressions if props else []
            out["properties"] = sorted(type(p).__name__ for p in props)
            loc = next((p for p in props if isinstance(p, exp.LocationProperty)), None)
            out["location"] = loc.this.name if loc else None
            schema = tree.this if isinstance(tree.this, exp.Schema) else None
            out["columns"] = len(schema.expressions) if schema else 0
            out["sql"] = tree.sql(engine)
        print(json.dumps(out))
