#!/usr/bin/env bash
# Conversion benchmark: a 500 MB+ bulk export generated from the Synthea data in ../shared,
# converted by the release binary and by DuckDB on the same input and cores.
# Prints seconds, MB/s, resources/s, peak RSS and output bytes of each (median of interleaved
# runs; ours as Delta tables, the default, and as plain Parquet folders), and the output size
# on the shared Synthea sets too. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
work=bench/work
mb=${BENCH_MB:-520}
cores=$(nproc)
cargo build --release
python3 -m pip install --quiet --disable-pip-version-check 'duckdb==1.4.4' 'duckdb-ext-delta==1.4.4.20260205'
if [ ! -f "$work/input/.done-$mb" ]; then
  rm -rf "$work/input"
  python3 bench/make_input.py ../shared/fhir-data/synthea-r4-small ../shared/fhir-data/synthea-r4-10-patients \
    --out "$work/input" --mb "$mb"
  touch "$work/input/.done-$mb"
fi
bytes=$(cat "$work"/input/*.ndjson | wc -c)
lines=$(cat "$work"/input/*.ndjson | wc -l)
echo "input: $((bytes / 1000000)) MB, $lines resources, $cores cores"
runs=${BENCH_RUNS:-3}
# Interleaved runs (ours, DuckDB, ours, ...): each run's seconds, peak RSS and output bytes;
# the median of each is printed.
measure() { # name, out dir, command...
  local name=$1 out=$2; shift 2
  rm -rf "$out"
  /usr/bin/time -f "%e %M" -o "$work/time.txt" "$@" > "$work/$name.log" 2>&1
  read -r secs kb < "$work/time.txt"
  echo "$name $secs $kb $(du -sb "$out" | cut -f1)" >> "$work/runs.txt"
}
rm -f "$work/runs.txt"
for _ in $(seq "$runs"); do
  measure fhir2parquet "$work/out" target/release/fhir2parquet convert "$work/input" -o "$work/out" -q -j "$cores"
  measure fhir2parquet-all "$work/out-all" target/release/fhir2parquet convert "$work/input" -o "$work/out-all" -q -j "$cores" --columns all
  # Plain Parquet folders beside the default Delta tables: what writing the log costs.
  measure fhir2parquet-plain "$work/out-plain" target/release/fhir2parquet convert "$work/input" -o "$work/out-plain" -q -j "$cores" --format parquet
  measure duckdb "$work/duckdb" python3 bench/duckdb_convert.py "$work/input" "$work/duckdb" "$cores"
done
python3 - "$work/runs.txt" "$bytes" "$lines" <<'PY2'
import statistics, sys
runs, b, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
by = {}
for line in open(runs):
    name, secs, kb, out = line.split()
    by.setdefault(name, []).append((float(secs), int(kb), int(out)))
print(f"{'':<22} {'median s':>9} {'MB/s':>8} {'resources/s':>12} {'peak RSS':>10} {'output':>10}  (runs)")
for name, rs in by.items():
    secs = statistics.median(r[0] for r in rs)
    kb = statistics.median(r[1] for r in rs)
    out = statistics.median(r[2] for r in rs)
    print(f"{name:<22} {secs:9.2f} {b / 1e6 / secs:8.1f} {n / secs:12.0f} {kb / 1024:7.0f} MiB {out / 1e6:7.1f} MB  "
          + " ".join(f"{r[0]:.2f}" for r in rs))
# What the Delta log costs: the default against --format parquet, by medians and by the median
# of each round's ratio (the machine drifts between rounds).
delta = [r[0] for r in by.get("fhir2parquet", [])]
plain = [r[0] for r in by.get("fhir2parquet-plain", [])]
if delta and plain:
    by_medians = statistics.median(delta) / statistics.median(plain) - 1
    by_rounds = statistics.median(d / p - 1 for d, p in zip(delta, plain))
    print(f"writing the Delta log: {100 * by_medians:+.1f}% by medians, {100 * by_rounds:+.1f}% by "
          f"the median of each round's ratio (the target: at most +5%; BENCH_RUNS=12 for a steadier figure)")
PY2
echo
echo "output size (NDJSON, gzipped, DuckDB zstd, ours, ours with --columns all):"
python3 bench/sizes.py target/release/fhir2parquet ../shared/fhir-data/synthea-r4-small \
  ../shared/fhir-data/synthea-r4-10-patients "$work/input"
echo
echo "fixed cost per file of one minimal resource per type:"
python3 bench/fixed_cost.py target/release/fhir2parquet
echo
echo "queries (best of 3; ours includes process start and table registration):"
python3 bench/queries.py "$work/out" "$work/input" "$cores"
echo
echo "BigQuery query corpus (tests/bigquery, best of 3): as written in our shell, and its DuckDB form"
echo "by DuckDB on the same Parquet:"
python3 bench/bigquery.py "$work/out" "$cores"
echo
echo "views (best of 3, written to Parquet; includes process start):"
python3 bench/views.py "$work/out" examples/views/patient_demographics.json examples/views/observations.json
# The benchmark input holds few patients and observations; views get inputs of their own type too:
# 200 MB of Patient, 520 MB of Observation (+ Patient), generated and converted the same way.
view_input() { # name, MB, types...
  local name=$1 mb=$2; shift 2
  if [ ! -f "$work/$name-input/.done-$mb" ]; then
    rm -rf "$work/$name-src" "$work/$name-input"; mkdir -p "$work/$name-src"
    for t in "$@"; do ln -sf "$(realpath ../shared/fhir-data/synthea-r4-small/$t.ndjson)" "$work/$name-src/"; done
    python3 bench/make_input.py "$work/$name-src" --out "$work/$name-input" --mb "$mb"
    touch "$work/$name-input/.done-$mb"
  fi
  rm -rf "$work/$name-out"
  target/release/fhir2parquet convert "$work/$name-input" -o "$work/$name-out" -q
}
view_input patients 200 Patient
# patient_geolocation reads past the typed columns (Address.extension is kept in _overflow).
python3 bench/views.py "$work/patients-out" examples/views/patient_demographics.json \
    examples/views/patient_geolocation.json
view_input observations 520 Patient Observation
python3 bench/views.py "$work/observations-out" examples/views/observations.json
echo
echo "views compiled to DuckDB SQL (view --sql duckdb) in DuckDB, beside fhir2parquet view:"
python3 bench/view_sql.py "$work/patients-out" examples/views/patient_demographics.json
python3 bench/view_sql.py "$work/observations-out" examples/views/observations.json
