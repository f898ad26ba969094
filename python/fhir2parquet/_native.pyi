"""Types of the extension module (python/src/lib.rs); the package's functions wrap these."""

from typing import Callable, List, Optional

import pyarrow as pa

__version__: str

class Fhir2ParquetError(Exception): ...
class BadInputError(Fhir2ParquetError): ...
class StoreError(Fhir2ParquetError): ...
class ServerError(Fhir2ParquetError): ...

def cli(argv: List[str]) -> int: ...
def convert(
    inputs: List[str],
    out: str,
    *,
    partition_by: List[str],
    columns: str,
    threads: Optional[int],
    merge: bool,
    append: bool,
    plain: bool,
    endpoint: Optional[str],
    progress: Optional[Callable[[int, int, int], None]],
    fhir_version: Optional[str] = None,
) -> str: ...
def export(argv: List[str], endpoint: Optional[str]) -> str: ...
def table(
    dataset: str,
    resource_type: str,
    *,
    columns: Optional[List[str]],
    where: Optional[str],
    as_of: Optional[str],
    endpoint: Optional[str],
) -> pa.RecordBatchReader: ...
def sql(dataset: str, query: str, *, endpoint: Optional[str]) -> pa.RecordBatchReader: ...
def view(view_json: str, dataset: str, *, endpoint: Optional[str]) -> pa.RecordBatchReader: ...
def schema(resource_type: str, fhir_version: str = "r4") -> pa.Schema: ...
def resource_types(fhir_version: str = "r4") -> List[str]: ...
def decode(
    resource_type: str, lines: pa.Array, first_line: int, fhir_version: str = "r4"
) -> pa.RecordBatch: ...
