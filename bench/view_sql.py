"""Views compiled to DuckDB SQL (`view --sql duckdb`) run by DuckDB over a converted dataset's
Parquet (its tables made by `warehouse duckdb`), side by side with `fhir2parquet view` on the same data: rows, seconds, rows/s. Both
write the rows to Parquet; best of 3; the release binary.

usage: python3 bench/view_sql.py OUT VIEW.json...
"""
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time

import duckdb


def isolated(f):
    """f() in a forked process: its result, or what ended the process."""
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=lambda: q.put(f()))
    p.start()
    p.join()
    if p.exitcode != 0:
        return f"the process ended with {p.exitcode} (a negative number is the signal)"
    return q.get()


def best(f):
    runs = []
    for _ in range(3):
        t = time.perf_counter()
        rows = f()
        runs.append((time.perf_counter() - t, rows))
    return min(runs)


def main():
    out, views = sys.argv[1], sys.argv[2:]
    exe = os.path.join(os.path.dirname(__file__), "..", "target", "release", "fhir2parquet")
    with tempfile.TemporaryDirectory() as tmp:
        for view in views:
            name = os.path.basename(view).removesuffix(".json")
            sql = subprocess.run([exe, "view", view, "--sql", "duckdb"], capture_output=True,
                                 text=True, check=True).stdout
            sql = "\n".join(l for l in sql.splitlines() if not l.startswith("--")).rstrip().rstrip(";")

            def ours():
                p = subprocess.run([exe, "view", view, "--data", out, "-o",
                                    os.path.join(tmp, name + ".parquet")],
                                   capture_output=True, text=True, check=True)
                return int(re.search(r": (\d+) rows", p.stderr).group(1))

            # The tables as `warehouse duckdb` makes them: every column of the typed schema.
            setup = subprocess.run([exe, "warehouse", "duckdb", out], capture_output=True,
                                   text=True, check=True).stdout

            def duck():
                con = duckdb.connect()
                try:  # `warehouse duckdb` reads Delta tables with the delta extension
                    import duckdb_ext
                    con.execute(f"SET extension_directory = '{list(duckdb_ext.__path__)[0]}/extensions'")
                except ImportError:
                    pass
                con.execute(setup)
                dest = os.path.join(tmp, name + ".duckdb.parquet")
                con.execute(f"COPY ({sql}) TO '{dest}' (FORMAT parquet)")
                return con.execute(f"SELECT count(*) FROM '{dest}'").fetchone()[0]

            for who, f in [("fhir2parquet view", ours), ("DuckDB, compiled SQL", duck)]:
                # In a process of its own: DuckDB 1.4.4's delta extension has been seen to
                # crash the process (free(): invalid pointer) on the Patient view's columns.
                result = isolated(lambda: best(f))
                if isinstance(result, str):
                    print(f"{name:<22} {who:<22} failed: {result}")
                    continue
                secs, rows = result
                print(f"{name:<22} {who:<22} {rows:>9} rows {secs:6.2f} s {rows / secs:11.0f} rows/s")


if __name__ == "__main__":
    main()
