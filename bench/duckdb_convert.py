"""DuckDB's NDJSON to Parquet on the same input and cores, for comparison."""
import os
import sys
import time

import duckdb

src, out, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.makedirs(out, exist_ok=True)
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
start = time.time()
for name in sorted(os.listdir(src)):
    if name.endswith(".ndjson"):
        t = name.split(".")[0]
        con.execute(
            f"COPY (SELECT * FROM read_ndjson('{os.path.join(src, name)}', maximum_object_size=268435456)) "
            f"TO '{os.path.join(out, t)}.parquet' (FORMAT parquet, COMPRESSION zstd)"
        )
print(f"duckdb seconds {time.time() - start:.2f}")
