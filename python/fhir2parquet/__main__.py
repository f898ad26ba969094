"""``python -m fhir2parquet ...``: the command line."""

from ._cli import main

main()
