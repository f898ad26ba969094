"""fhir2parquet.spark in pyspark's local mode with 4 partitions: the rows of the command line's
conversion."""

import os
import sys

import pytest

import fhir2parquet as f2p
from conftest import SAMPLE, need, ndjson


@pytest.fixture(scope="module")
def spark():
    need("pyspark")
    from pyspark.sql import SparkSession

    # The workers run this Python, which has the package (on a cluster: the wheel installed
    # as a cluster library).
    os.environ["PYSPARK_PYTHON"] = sys.executable

    session = (
        SparkSession.builder.master("local[4]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    yield session
    session.stop()


def test_spark_decodes_the_rows_the_command_line_converts(spark, dataset):
    from fhir2parquet import spark as f2p_spark

    lines = spark.read.text(str(SAMPLE / "Observation.ndjson.gz")).repartition(4)
    assert lines.rdd.getNumPartitions() == 4
    decoded = lines.mapInArrow(f2p_spark.decoder("Observation"), f2p_spark.schema("Observation"))
    assert decoded.schema == f2p_spark.schema("Observation")
    columns = ["id", "status", "code", "effectiveDateTime", "valueQuantity", "component", "_overflow"]
    ours = decoded.select(*columns).toArrow().sort_by("id")
    cli = f2p.table(dataset, "Observation", columns=columns).sort_by("id")
    assert ours.num_rows == len(ndjson(SAMPLE, "Observation"))
    # Spark's own types carry the same values (decimals, timestamps, nested lists).
    assert ours.to_pylist() == cli.to_pylist()


def test_a_line_of_another_type_fails_the_task_with_its_line(spark, tmp_path):
    from fhir2parquet import spark as f2p_spark

    patient = ndjson(SAMPLE, "Patient")[0]
    import json

    path = tmp_path / "mixed.ndjson"
    path.write_text(json.dumps(ndjson(SAMPLE, "Observation")[0]) + "\n" + json.dumps(patient) + "\n")
    df = f2p_spark.read_ndjson(spark, str(path), "Observation")
    with pytest.raises(Exception, match="line 2: a Patient where Observation was expected"):
        df.collect()
