#!/usr/bin/env bash
# Fuzzes each target for SECONDS (default 60) with cargo-fuzz (libFuzzer, AddressSanitizer),
# from corpora seeded with the R4 specification examples and the SQL on FHIR suite's views.
# Needs `cargo install cargo-fuzz`; on a stable toolchain, RUSTC_BOOTSTRAP=1 lets it use the
# nightly flags it needs. A crash is saved under fuzz/artifacts/<target>/: copy it to
# fuzz/regressions/<target>/ and `cargo test` runs it from then on.
#   fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}; shift || true
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(json resource fhirpath view)
python3 seed.py
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
  echo "== $t: ${secs}s"
  cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=4096 -max_len=1048576 \
    -print_final_stats=1 2>&1 | grep -E "stat::number_of_executed_units|stat::peak_rss_mb|cov:|ERROR|panicked|SUMMARY" | tail -5
done
