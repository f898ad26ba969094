//! Published FHIR-on-BigQuery queries run as written (`tests/bigquery/*.sql`, each naming its
//! source), over the small Synthea set, against answers DuckDB computes from the NDJSON itself
//! (the second query of each file, run by `tests/bigquery/reference.py`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use arrow::util::display::array_value_to_string;
use fhir2parquet::sql::Shell;

use crate::{python_has, shared};

const MARK: &str = "-- reference: DuckDB over the NDJSON";

fn corpus() -> Vec<PathBuf> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/bigquery"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    files
}

/// A value as text both sides agree on: numbers to 9 significant digits, integers as integers.
fn normal(v: &str) -> String {
    match v.parse::<f64>() {
        Ok(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{}", x as i64),
        Ok(x) if x.is_finite() => format!("{:.9e}", x),
        _ => v.to_string(),
    }
}

fn sorted(mut rows: Vec<Vec<String>>) -> Vec<Vec<String>> {
    for r in rows.iter_mut() {
        for v in r.iter_mut() {
            *v = normal(v);
        }
    }
    rows.sort();
    rows
}

#[test]
fn published_bigquery_queries_run_as_written_with_duckdbs_answers() {
    if !python_has("duckdb", "duckdb") {
        return;
    }
    let files = corpus();
    assert!(
        files.len() >= 30,
        "the corpus holds {} queries",
        files.len()
    );
    let data = shared("fhir-data/synthea-r4-small");
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/bigquery/reference.py"
        ))
        .arg(&data)
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&out.stdout).unwrap();
    let shell = Shell::open(crate::sql::dataset(), None).unwrap();
    let mut failures = Vec::new();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(f).unwrap();
        let (bigquery, _) = text.split_once(MARK).expect("a reference query");
        assert!(
            bigquery.starts_with("-- source: "),
            "{name} names its source"
        );
        let want = &reference[&name];
        let want: Vec<Vec<String>> = match want.get("rows") {
            Some(rows) => rows
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    r.as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_str().unwrap_or_default().to_string())
                        .collect()
                })
                .collect(),
            None => panic!("{name}: the reference query fails: {}", want["error"]),
        };
        assert!(!want.is_empty(), "{name}: the reference gives no rows");
        let got = match shell.run_sql(bigquery) {
            Ok(batches) => {
                let mut rows = Vec::new();
                for b in &batches {
                    for i in 0..b.num_rows() {
                        rows.push(
                            b.columns()
                                .iter()
                                .map(|c| array_value_to_string(c, i).unwrap())
                                .collect::<Vec<String>>(),
                        );
                    }
                }
                rows
            }
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        if sorted(got.clone()) != sorted(want.clone()) {
            failures.push(format!(
                "{name}: {} rows, want {}\n  got  {:?}\n  want {:?}",
                got.len(),
                want.len(),
                sorted(got).iter().take(3).collect::<Vec<_>>(),
                sorted(want).iter().take(3).collect::<Vec<_>>()
            ));
        }
    }
    eprintln!(
        "{} of {} published BigQuery queries give DuckDB's answers",
        files.len() - failures.len(),
        files.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
