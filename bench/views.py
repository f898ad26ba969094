"""Runs ViewDefinitions over a converted dataset with the release binary: rows, rows/s, peak RSS.

usage: python3 bench/views.py OUT VIEW.json...
"""
import os
import re
import subprocess
import sys
import tempfile
import time


def main():
    out, views = sys.argv[1], sys.argv[2:]
    exe = os.path.join(os.path.dirname(__file__), "..", "target", "release", "fhir2parquet")
    with tempfile.TemporaryDirectory() as tmp:
        for view in views:
            name = os.path.basename(view).removesuffix(".json")
            dest = os.path.join(tmp, name + ".parquet")
            best = None
            for _ in range(3):
                t = time.perf_counter()
                p = subprocess.run(
                    ["/usr/bin/time", "-f", "%M", exe, "view", view, "--data", out, "-o", dest],
                    capture_output=True, text=True, check=True)
                secs = time.perf_counter() - t
                rows = int(re.search(r": (\d+) rows", p.stderr).group(1))
                kb = int(p.stderr.strip().splitlines()[-1])
                if best is None or secs < best[0]:
                    best = (secs, rows, kb)
            secs, rows, kb = best
            print(f"{name:<22} {rows:>10} rows {secs:7.2f} s {rows / secs:12.0f} rows/s"
                  f"  peak RSS {kb / 1024:6.0f} MiB")


if __name__ == "__main__":
    main()
