//! DuckDB (1.4 LTS and the current 2.x) and pyarrow read what convert writes. `.ci/run` installs both from PyPI; on a machine
//! without them the test says so and passes only outside CI.

use std::process::Command;

use crate::{convert_opts, shared};

#[test]
fn duckdb_and_pyarrow_read_the_output() {
    if !crate::python_has("duckdb, pyarrow, pytz", "duckdb pyarrow pytz") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = convert_opts(tmp.path());
    opts.partition_by =
        vec![fhir2parquet::convert::PartitionSpec::parse("Observation.effective:year").unwrap()];
    let src = shared("fhir-data/synthea-r4-small");
    fhir2parquet::convert::run(std::slice::from_ref(&src), &opts).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/check.py");
    // DuckDB 1.4 LTS, then the current 2.x.
    let mut runs = vec![None];
    if crate::duckdb2() {
        runs.push(Some(crate::DUCKDB2));
    }
    for pythonpath in runs {
        let mut c = Command::new("python3");
        if let Some(p) = pythonpath {
            c.env("PYTHONPATH", p);
        }
        let o = c
            .args([script, tmp.path().to_str().unwrap(), src.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{pythonpath:?}: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
