"""A DuckDB connection with the delta extension loaded, from the folder of installed extensions
named by DUCKDB_EXTENSION_DIRECTORY (the PyPI `duckdb-ext-delta` package's) where given: the
tests never download an extension."""
import os

import duckdb


def connect():
    con = duckdb.connect()
    ext = os.environ.get("DUCKDB_EXTENSION_DIRECTORY")
    if ext:
        con.execute(f"SET extension_directory = '{ext}'")
        con.execute("SET autoinstall_known_extensions = false")
    con.execute("LOAD delta")
    return con
