"""Runs the statements `fhir2parquet warehouse ENGINE` printed, in a real engine, over the
dataset converted from observations.ndjson, and reads back the values every engine must give:
a decimal, an instant, a time, a nested coding, a partition column and reference_id.

    python3 check.py duckdb|spark-athena|spark-databricks|snowflake STATEMENTS.sql
"""

import datetime
import decimal
import os
import sys

engine, script = sys.argv[1], sys.argv[2]
statements = []
for s in open(script).read().split(";\n\n"):
    s = "\n".join(l for l in s.split("\n") if not l.startswith("--")).strip()
    if s:
        statements.append(s)

UTC = datetime.timezone.utc
WANT = {
    "count": 3,
    "height": decimal.Decimal("183.414442937858600001"),
    "tiny": decimal.Decimal("-0.000000000000000001"),
    "issued": datetime.datetime(2019, 3, 4, 10, 30, 0, 123000, tzinfo=UTC),
    "time_us": (13 * 3600 + 45 * 60 + 30) * 1_000_000 + 500_000,
    "code": "8302-2",
    "second_code": "8480-6",
    "years": ["2019", "2020", "__HIVE_DEFAULT_PARTITION__"],
}


def check(rows):
    """rows: dict of query name -> value, as the engine returned them."""
    for k, v in rows.items():
        want = WANT[k]
        if isinstance(want, datetime.datetime) and v.tzinfo is None:
            v = v.replace(tzinfo=UTC)
        assert v == want, (k, v, want)
    print(f"{engine}: {len(rows)} values as in the input")


def run_all(execute):
    for s in statements:
        execute(s)


if engine == "duckdb":
    import duckdb

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from duckdb_local import connect

    con = connect()
    con.execute("SET TimeZone = 'UTC'")
    run_all(con.execute)
    # A Delta table's rows without a partition value have a NULL one (the log's null); read as
    # plain Hive folders, DuckDB 1.4 gives the folder's name.
    # DuckDB 2.x reads the Hive folder of NULLs as NULL, as Spark and Athena do.
    if any("delta_scan" in s for s in statements) or not duckdb.__version__.startswith("1."):
        WANT["years"] = ["2019", "2020", None]
    one = lambda q: con.execute(q).fetchone()[0]
    if os.environ.get("ONLY_COUNT"):
        n = one('SELECT COUNT(*) FROM "Patient"')
        assert n == int(os.environ["ONLY_COUNT"]), n
        print(f"{engine}: {n} patients")
        sys.exit(0)
    check({
        "count": one('SELECT COUNT(*) FROM "Observation"'),
        "height": one("""SELECT "valueQuantity".value FROM "Observation" WHERE id = 'o1'"""),
        "tiny": one("""SELECT "valueQuantity".value FROM "Observation" WHERE id = 'o3'"""),
        "issued": one("""SELECT issued FROM "Observation" WHERE id = 'o1'"""),
        "time_us": one("""SELECT "valueTime_ts" FROM "Observation" WHERE id = 'o2'"""),
        "code": one("""SELECT code.coding[1].code FROM "Observation" WHERE id = 'o1'"""),
        "second_code": one("""SELECT code.coding[2].code FROM "Observation" WHERE id = 'o3'"""),
        "years": [r[0] for r in con.execute(
            'SELECT DISTINCT effective_year FROM "Observation" ORDER BY 1').fetchall()],
    })
    ids = [r[0] for r in con.execute(
        'SELECT reference_id(subject.reference) FROM "Observation" ORDER BY id').fetchall()]
    assert ids == ["p1", "p1", "abc"], ids
    assert one("SELECT reference_id('Patient?identifier=a|b')") is None

elif engine.startswith("spark"):
    from pyspark.sql import SparkSession

    # Hive's default partition (no effective date) is NULL in Spark, as Hive has it.
    WANT["years"] = [None, "2019", "2020"]

    work = os.environ["SPARK_WORK"]
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("fhir2parquet-warehouse-test")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.warehouse.dir", os.path.join(work, "warehouse"))
        .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={work}")
        # Athena's views quote names with double quotes, as Trino does.
        .config("spark.sql.ansi.doubleQuotedIdentifiers", "true")
        .enableHiveSupport()
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    run_all(spark.sql)
    one = lambda q: spark.sql(q).collect()[0][0]
    check({
        "count": one("SELECT COUNT(*) FROM Observation"),
        "height": one("SELECT valueQuantity.value FROM Observation WHERE id = 'o1'"),
        "tiny": one("SELECT valueQuantity.value FROM Observation WHERE id = 'o3'"),
        "issued": one("SELECT issued FROM Observation WHERE id = 'o1'"),
        "time_us": one("SELECT valueTime_ts FROM Observation WHERE id = 'o2'"),
        "code": one("SELECT code.coding[0].code FROM Observation WHERE id = 'o1'"),
        "second_code": one("SELECT code.coding[1].code FROM Observation WHERE id = 'o3'"),
        "years": [r[0] for r in spark.sql(
            "SELECT DISTINCT effective_year FROM Observation ORDER BY 1").collect()],
    })
    if engine == "spark-athena":
        q = "SELECT subject_id FROM Observation_refs ORDER BY id"
    else:
        q = "SELECT reference_id(subject.reference) FROM Observation ORDER BY id"
    ids = [r[0] for r in spark.sql(q).collect()]
    assert ids == ["p1", "p1", "abc"], ids
    spark.stop()

elif engine == "snowflake":
    import fakesnow
    import snowflake.connector

    # fakesnow (Snowflake's SQL on DuckDB) runs every statement but COPY INTO: its PUT gzips
    # the files whatever AUTO_COMPRESS says, and it matches Parquet leaf fields, not columns.
    with fakesnow.patch():
        conn = snowflake.connector.connect(database="db", schema="public")
        cur = conn.cursor()
        cur.execute("CREATE DATABASE IF NOT EXISTS db")
        cur.execute("CREATE SCHEMA IF NOT EXISTS db.public")
        ran = 0
        for s in statements:
            if s.startswith("COPY INTO"):
                continue
            cur.execute(s)
            ran += 1
        cur.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'Observation'"
        )
        types = dict(cur.fetchall())
        assert types["id"] == "TEXT", types["id"]
        assert types["issued"] == "TIMESTAMP_TZ", types["issued"]
        # fakesnow reports semi-structured columns (OBJECT, ARRAY) as VARIANT.
        assert types["code"] in ("OBJECT", "VARIANT"), types["code"]
        assert types["valueTime_ts"] == "NUMBER", types["valueTime_ts"]
        # fakesnow takes SQL functions' bodies for literals: the body is checked on its own.
        body = next(s for s in statements if "FUNCTION" in s).split("$$")[1]
        for ref, want in [("https://x/fhir/Patient/1/_history/2", "1"), ("#c1", "c1"),
                          ("urn:uuid:abc", "abc"), ("Patient?identifier=a|b", None)]:
            cur.execute("SELECT " + body.replace("(r,", f"('{ref}',"))
            got = cur.fetchone()[0]
            assert got == want, (ref, got)
        print(f"{engine}: {ran} statements ran; COPY INTO not run (see above)")
else:
    sys.exit(f"unknown engine {engine}")
