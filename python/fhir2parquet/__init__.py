"""fhir2parquet: FHIR Bulk Data exports as typed Arrow tables, Parquet and Delta Lake tables.

Convert an export (NDJSON files, folders, a bulk manifest) into a dataset with one Delta table
per resource type, whose schema comes from the FHIR specification, then read it back as Arrow::

    import fhir2parquet as f2p

    f2p.convert("examples/synthea-sample", "out")
    patients = f2p.table("out", "Patient", columns=["id", "gender", "birthDate"])
    counts = f2p.sql("out", "SELECT gender, COUNT(*) AS n FROM Patient GROUP BY gender")
    print(counts.to_pandas())

Results are ``pyarrow`` tables that share the engine's memory (no copy): ``polars.from_arrow``,
``duckdb.sql("FROM t")`` and ``.to_pandas()`` take them as they are. Errors raise
:class:`Fhir2ParquetError` (and its subclasses :class:`BadInputError`, :class:`StoreError`,
:class:`ServerError`) with the command line's messages; Ctrl-C raises ``KeyboardInterrupt``
and leaves the dataset as an interrupted run of the command leaves it (nothing published).

The ``fhir2parquet`` command is installed with the package; ``fhir2parquet.spark`` decodes
NDJSON inside Spark tasks with the same decoder.
"""

import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import pyarrow as pa

from . import _native, _progress
from ._native import BadInputError, Fhir2ParquetError, ServerError, StoreError

__version__: str = _native.__version__

__all__ = [
    "convert",
    "table",
    "batches",
    "sql",
    "view",
    "export",
    "schema",
    "resource_types",
    "ConvertResult",
    "Fhir2ParquetError",
    "BadInputError",
    "StoreError",
    "ServerError",
]

PathLike = Union[str, "os.PathLike[str]"]
Progress = Union[None, bool, Callable[[int, int, int], None]]


@dataclass(frozen=True)
class ConvertResult:
    """What a conversion wrote: the numbers of its run record (``_fhir2parquet_run.json``).

    Attributes:
        rows: resources written, per resource type.
        rejects: lines rejected (each kept with its file, line and reason in the dataset's
            rejects folder).
        files: Parquet files written.
        bytes: bytes of Parquet written.
        seconds: the run's wall time.
        run_id: the run's id, as recorded in the dataset.
        table_versions: per type, the Delta table version the run committed.
        problems: what the command line prints as warnings (rejects, damaged inputs, manifest
            counts that do not match); empty when everything converted.
        fhir_version: the FHIR release the data was converted as (``"4.0.1"``, ``"5.0.0"``).
        version_hint: when the data looks like another FHIR version: which, and how to ask
            for it (also warned); else None.
        record: the whole run record.
    """

    rows: Dict[str, int]
    rejects: int
    files: int
    bytes: int
    seconds: float
    run_id: str
    table_versions: Dict[str, int]
    problems: List[str] = field(default_factory=list)
    fhir_version: str = "4.0.1"
    version_hint: Optional[str] = None
    record: Dict[str, Any] = field(default_factory=dict, repr=False)

    @staticmethod
    def _from_json(text: str) -> "ConvertResult":
        outcome = json.loads(text)
        record = outcome["record"]
        types = record.get("types", {})
        result = ConvertResult(
            rows={t: r["rows"] for t, r in types.items()},
            rejects=record["rejects"]["count"],
            files=sum(r["files"] for r in types.values()),
            bytes=sum(r["parquet_bytes"] for r in types.values()),
            seconds=record["seconds"],
            run_id=record["run_id"],
            table_versions={
                t: r["table_version"] for t, r in types.items() if "table_version" in r
            },
            problems=list(outcome["problems"]),
            fhir_version=record["fhir_version"],
            version_hint=record.get("version_hint"),
            record=record,
        )
        for p in result.problems:
            warnings.warn(p, stacklevel=3)
        if result.version_hint:
            warnings.warn(result.version_hint, stacklevel=3)
        return result


def _paths(inputs: Union[PathLike, Iterable[PathLike]]) -> List[str]:
    if isinstance(inputs, (str, os.PathLike)):
        return [os.fspath(inputs)]
    return [os.fspath(i) for i in inputs]


def convert(
    inputs: Union[PathLike, Iterable[PathLike]],
    out: PathLike,
    *,
    partition_by: Optional[Sequence[str]] = None,
    columns: str = "present",
    threads: Optional[int] = None,
    merge: bool = False,
    append: bool = False,
    format: str = "delta",
    progress: Progress = None,
    endpoint: Optional[str] = None,
    fhir_version: Optional[str] = None,
) -> ConvertResult:
    """Converts FHIR NDJSON into a dataset, as ``fhir2parquet convert`` does.

    Args:
        inputs: NDJSON files (plain or gzip), folders of them, bulk manifests, or s3://, gs://,
            az:// URLs of any of these.
        out: the dataset: a folder or an s3://, gs://, az:// URL. Each resource type becomes a
            Delta table in ``out/<Type>``; its earlier rows are replaced (see ``append`` and
            ``merge``).
        partition_by: partition columns, as ``--partition-by`` takes them (``"year(effective)"``).
        columns: ``"present"`` (files hold the columns with values; readers see the full typed
            schema) or ``"all"``.
        threads: worker threads (default: one per core).
        merge: apply the inputs as a change set by ``id`` and ``meta.lastUpdated``, with the
            deletions of their manifests' ``deleted`` sections.
        append: add the rows to the tables instead of replacing them.
        format: ``"delta"`` (tables with history) or ``"parquet"`` (plain folders).
        progress: a progress bar (None: when in a terminal or Jupyter), or a function called
            with ``(read_bytes, total_bytes, resources)`` as the run goes.
        endpoint: a custom object store endpoint (an S3-compatible store, an emulator).
        fhir_version: the FHIR version of the inputs, ``"r4"``, ``"r4b"`` or ``"r5"`` (default:
            the dataset's when adding to one, else ``"r4"``). A dataset holds one version.

    Returns:
        A :class:`ConvertResult`. Rejected lines are not errors: they are counted, kept in the
        dataset's rejects folder and warned about (``warnings.warn``).

    Raises:
        BadInputError: an input that does not exist or options that do not fit.
        StoreError: an object store request that failed.
        Fhir2ParquetError: anything else that stopped the run (nothing was published).
        KeyboardInterrupt: Ctrl-C; nothing was published.
    """
    if format not in ("delta", "parquet"):
        raise BadInputError(f'format={format!r}: give "delta" or "parquet"')
    bar = _progress.make(progress, "convert")
    try:
        text = _native.convert(
            _paths(inputs),
            os.fspath(out),
            partition_by=list(partition_by or []),
            columns=columns,
            threads=threads,
            merge=merge,
            append=append,
            plain=format == "parquet",
            endpoint=endpoint,
            progress=bar,
            fhir_version=fhir_version,
        )
    finally:
        if bar is not None and hasattr(bar, "close"):
            bar.close()
    return ConvertResult._from_json(text)


def batches(
    dataset: PathLike,
    resource_type: str,
    *,
    columns: Optional[Sequence[str]] = None,
    where: Optional[str] = None,
    as_of: Union[None, int, str] = None,
    endpoint: Optional[str] = None,
) -> pa.RecordBatchReader:
    """A resource type's table as a stream of record batches, read as they are consumed, for
    tables larger than memory. Arguments as :func:`table`."""
    return _native.table(
        os.fspath(dataset),
        resource_type,
        columns=list(columns) if columns is not None else None,
        where=where,
        as_of=None if as_of is None else str(as_of),
        endpoint=endpoint,
    )


def table(
    dataset: PathLike,
    resource_type: str,
    *,
    columns: Optional[Sequence[str]] = None,
    where: Optional[str] = None,
    as_of: Union[None, int, str] = None,
    endpoint: Optional[str] = None,
) -> pa.Table:
    """A resource type's table, with its full typed schema from the FHIR specification.

    Args:
        dataset: a dataset written by :func:`convert` or ``fhir2parquet convert``: a folder or an
            s3://, gs://, az:// URL.
        resource_type: ``"Patient"``, ``"Observation"``, ... A type the dataset holds no data of
            gives no rows, with its schema.
        columns: the top-level columns to read (all when None); only these are read.
        where: a SQL condition over the table's columns (``"gender = 'female'"``,
            ``"effectiveDateTime_ts >= TIMESTAMP '2020-01-01'"``), pushed down to the scan.
        as_of: the tables as they were at a Delta version (an int) or a time (an RFC 3339 text
            or a date).
        endpoint: a custom object store endpoint.

    Raises:
        BadInputError: a type FHIR does not have, a column the type does not have, a condition
            that does not compile.
    """
    return batches(
        dataset, resource_type, columns=columns, where=where, as_of=as_of, endpoint=endpoint
    ).read_all()


def sql(dataset: PathLike, query: str, *, endpoint: Optional[str] = None) -> pa.Table:
    """Runs SQL over a dataset, as ``fhir2parquet sql`` does: every resource type is a table,
    with the FHIR functions (``fhirpath``, ``reference_id``, ...) and BigQuery's idioms. Several
    statements run in order; the last one's rows are returned."""
    return _native.sql(os.fspath(dataset), query, endpoint=endpoint).read_all()


def view(
    view_definition: Union[PathLike, str, Mapping[str, Any]],
    dataset: PathLike,
    *,
    endpoint: Optional[str] = None,
) -> pa.Table:
    """The rows of a SQL on FHIR ViewDefinition over a dataset.

    Args:
        view_definition: a path to a ViewDefinition JSON file, its JSON text, or a dict.
        dataset: a dataset written by :func:`convert`.
    """
    if isinstance(view_definition, Mapping):
        text = json.dumps(view_definition)
    elif isinstance(view_definition, str) and view_definition.lstrip().startswith("{"):
        text = view_definition
    else:
        path = os.fspath(view_definition)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise BadInputError(f"cannot read the view {path}: {e.strerror}") from None
    return _native.view(text, os.fspath(dataset), endpoint=endpoint).read_all()


def _flags(options: Mapping[str, Any]) -> List[str]:
    """Keyword arguments as the command line's flags: ``type_filter=[...]`` repeats
    ``--type-filter``, ``True`` is a bare flag, None and False are left out."""
    names = {"types": "type", "type_filters": "type-filter", "params": "param"}
    argv: List[str] = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + names.get(key, key).replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, Mapping):
            for k, v in value.items():
                argv += [flag, f"{k}={v}"]
        elif isinstance(value, (list, tuple)):
            for v in value:
                argv += [flag, os.fspath(v) if isinstance(v, os.PathLike) else str(v)]
        else:
            argv += [flag, os.fspath(value) if isinstance(value, os.PathLike) else str(value)]
    return argv


def export(
    base_url: Optional[str],
    out: PathLike,
    *,
    endpoint: Optional[str] = None,
    **options: Any,
) -> Optional[ConvertResult]:
    """Runs a FHIR Bulk Data export into a dataset, as ``fhir2parquet export`` does.

    The keywords are the command's options, named as its flags with ``_`` for ``-``:
    ``group="g1"``, ``patients=True``, ``types=["Patient", "Observation"]``,
    ``since="2024-01-01T00:00:00Z"`` (or ``"auto"``), ``type_filters=[...]``,
    ``params={"includeAssociatedData": "LatestProvenanceResources"}``, ``client_id``, ``key``,
    ``kid``, ``scope``, ``client_secret_env``, ``resume=True``, ``allow_partial=True``,
    ``append=True``, ``threads``, ``parallel``, ``keep_ndjson``, ``max_poll``, ...
    (``fhir2parquet export --help`` lists them all).

    Returns:
        The :class:`ConvertResult` of what was published; None when ``resume=True`` found the
        export already published (its leftovers are cleaned up).

    Raises:
        ServerError: the server refused or failed the export (its OperationOutcome's text).
        StoreError: an object store request failed.
        KeyboardInterrupt: Ctrl-C; what was downloaded is kept for ``resume=True``.
    """
    argv = ([base_url] if base_url else []) + ["--out", os.fspath(out)]
    options.setdefault("quiet", True)
    argv += _flags(options)
    text = _native.export(argv, endpoint)
    if "already_published" in json.loads(text):
        return None
    return ConvertResult._from_json(text)


def schema(resource_type: str, fhir_version: str = "r4") -> pa.Schema:
    """The typed Arrow schema of a resource type, from the specification of a FHIR version
    (``"r4"``, ``"r4b"`` or ``"r5"``)."""
    return _native.schema(resource_type, fhir_version)


def resource_types(fhir_version: str = "r4") -> List[str]:
    """The resource types of a FHIR version (``"r4"``, ``"r4b"`` or ``"r5"``)."""
    return list(_native.resource_types(fhir_version))
