"""Output size side by side: NDJSON, gzipped NDJSON, DuckDB's Parquet (zstd) and ours, with the
columns that have values (the default) and with every column in each file (`--columns all`).

Usage: python3 bench/sizes.py BINARY DIR...
Each DIR is a folder of NDJSON files (one resource type per file, as a bulk export gives them).
"""
import glob
import gzip
import os
import subprocess
import sys
import tempfile

import duckdb


def ndjson_files(d):
    return sorted(glob.glob(os.path.join(d, "*.ndjson")))


def dir_bytes(d):
    return sum(os.path.getsize(p) for p in glob.glob(os.path.join(d, "**", "*.parquet"), recursive=True))


binary, dirs = sys.argv[1], sys.argv[2:]
print(f"{'data':<40} {'NDJSON':>10} {'gzipped':>10} {'DuckDB':>10} {'ours':>10} {'ours/DuckDB':>12}"
      f" {'all':>10} {'all/DuckDB':>11}")
for d in dirs:
    files = ndjson_files(d)
    raw = sum(os.path.getsize(f) for f in files)
    gz = sum(len(gzip.compress(open(f, "rb").read(), 6)) for f in files)
    with tempfile.TemporaryDirectory() as tmp:
        con = duckdb.connect()
        by_type = {}
        for f in files:
            by_type.setdefault(os.path.basename(f).split(".")[0], []).append(f)
        for t, fs in by_type.items():
            con.execute(
                f"COPY (SELECT * FROM read_ndjson({fs!r}, maximum_object_size=268435456)) "
                f"TO '{tmp}/{t}.parquet' (FORMAT parquet, COMPRESSION zstd)"
            )
        duck = dir_bytes(tmp)
        out = os.path.join(tmp, "ours")
        subprocess.run([binary, "convert", d, "-o", out, "-q"], check=True)
        ours = dir_bytes(out)
        out = os.path.join(tmp, "all")
        subprocess.run([binary, "convert", d, "-o", out, "-q", "--columns", "all"], check=True)
        every = dir_bytes(out)
    name = os.path.basename(os.path.normpath(d))
    print(f"{name:<40} {raw / 1e6:9.2f}M {gz / 1e6:9.2f}M {duck / 1e6:9.2f}M {ours / 1e6:9.2f}M {ours / duck:11.1f}x"
          f" {every / 1e6:9.2f}M {every / duck:10.1f}x")
