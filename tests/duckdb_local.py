"""A DuckDB connection that takes extensions only from the folder of installed extensions named
by DUCKDB_EXTENSION_DIRECTORY (the PyPI `duckdb-ext-*` packages'), where given: the tests never
download an extension. Shared by the test scripts of tests/*/ (each puts tests/ on its path).
"""
import os

import duckdb


def connect(*load):
    """A connection, the extensions named in `load` loaded."""
    con = duckdb.connect()
    ext = os.environ.get("DUCKDB_EXTENSION_DIRECTORY")
    if ext:
        con.execute(f"SET extension_directory = '{ext}'")
        con.execute("SET autoinstall_known_extensions = false")
    for e in load:
        con.execute(f"LOAD {e}")
    return con
