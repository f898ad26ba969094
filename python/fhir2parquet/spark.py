"""NDJSON decoded inside Spark tasks with fhir2parquet's decoder, for exports too large for one
machine: Spark (or Databricks) reads the lines, each task turns its lines into typed Arrow
batches, and Spark writes them with its own writers (Delta, Parquet, tables)::

    from fhir2parquet import spark as f2p_spark

    lines = spark.read.text("s3://bucket/export/Observation*.ndjson.gz")
    observations = lines.mapInArrow(
        f2p_spark.decoder("Observation"), f2p_spark.schema("Observation")
    )
    observations.write.format("delta").save("s3://bucket/fhir/Observation")

or ``f2p_spark.read_ndjson(spark, paths, "Observation")`` for both steps. The rows and their
columns are those of ``fhir2parquet convert``: the typed schema of the FHIR specification, and
``_overflow`` holding whatever the typed columns cannot (nothing is lost). A line that is not a
resource of the type raises :class:`fhir2parquet.BadInputError` naming its line in the task's
part of the input, and fails the Spark job: filter other types out first when files mix them.
Each function takes ``fhir_version`` (``"r4"``, the default, ``"r4b"`` or ``"r5"``).

The workers need the wheel installed too (on Databricks: a cluster library, from the wheel file
or PyPI).
"""

from typing import Callable, Iterable, Iterator, Sequence, Union

import pyarrow as pa

from . import _native
from . import schema as arrow_schema

__all__ = ["schema", "decoder", "read_ndjson"]


def schema(resource_type: str, fhir_version: str = "r4"):
    """The typed schema of a resource type as a Spark ``StructType``."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(arrow_schema(resource_type, fhir_version))


def decoder(
    resource_type: str, column: str = "value", fhir_version: str = "r4"
) -> Callable[[Iterable[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The function for ``DataFrame.mapInArrow``: batches of NDJSON lines (a string column,
    ``value`` as ``spark.read.text`` names it) to batches of the type's typed schema."""

    def decode(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        line = 1
        for batch in batches:
            lines = batch.column(batch.schema.get_field_index(column))
            if len(lines) == 0:
                continue
            out = _native.decode(resource_type, lines, line, fhir_version)
            line += len(lines)
            if out.num_rows:
                yield out

    return decode


def read_ndjson(
    spark, paths: Union[str, Sequence[str]], resource_type: str, fhir_version: str = "r4"
):
    """A Spark DataFrame of the resources in NDJSON files (plain or gzip) of one type."""
    lines = spark.read.text(paths)
    return lines.mapInArrow(
        decoder(resource_type, fhir_version=fhir_version),
        schema(resource_type, fhir_version),
    )
