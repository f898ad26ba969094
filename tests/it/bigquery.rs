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

/// The scan's projection of a query's plan: the columns read from Parquet.
fn scanned_columns(shell: &Shell, sql: &str) -> Vec<String> {
    let batches = shell.run_sql(&format!("EXPLAIN {sql}")).unwrap();
    let mut plan = String::new();
    for b in &batches {
        for i in 0..b.num_rows() {
            plan.push_str(&array_value_to_string(b.column(1), i).unwrap());
            plan.push('\n');
        }
    }
    let scan = plan
        .lines()
        .find(|l| l.contains("DataSourceExec"))
        .unwrap_or_else(|| panic!("no scan in {plan}"));
    let projection = scan
        .split("projection=[")
        .nth(1)
        .unwrap_or_else(|| panic!("no projection in {scan}"));
    // Items at depth 0 up to the closing bracket: a column, or an expression over columns
    // (`get_field(valueQuantity@31, value) as ...`), named by the `name@index` it reads.
    let (mut items, mut depth, mut item) = (Vec::new(), 0, String::new());
    for ch in projection.chars() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ']' if depth == 0 => break,
            ',' if depth == 0 => {
                items.push(std::mem::take(&mut item));
                continue;
            }
            _ => {}
        }
        item.push(ch);
    }
    items.push(item);
    let mut cols: Vec<String> = items
        .iter()
        .map(|i| {
            let i = i.trim();
            match i.split_once('@') {
                Some((before, _)) => before
                    .rsplit(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap()
                    .to_string(),
                None => i.to_string(),
            }
        })
        .collect();
    cols.sort();
    cols.dedup();
    cols
}

/// The rewritten forms stay vectorized plans over the columns they read: names respelled,
/// correlated subqueries compiled, implicit UNNESTs folded; no column read that the query does
/// not name, and no row-by-row fallback.
#[test]
fn rewritten_forms_read_only_the_columns_they_name() {
    let shell = Shell::open(crate::sql::dataset(), None).unwrap();
    for (sql, want) in [
        (
            "SELECT subject.patientId, AVG(value.quantity.value) FROM observation o \
             WHERE o.effectivedatetime > '2017' GROUP BY 1",
            vec!["effectiveDateTime", "subject", "valueQuantity"],
        ),
        (
            "SELECT id FROM observation o WHERE EXISTS (SELECT 1 FROM UNNEST(o.code.coding) c \
             WHERE c.code = '2339-0')",
            vec!["code", "id"],
        ),
        (
            "SELECT (SELECT value.string FROM UNNEST(extension) WHERE url = 'u') FROM patient",
            vec!["extension"],
        ),
        (
            "SELECT c.display, COUNT(*) FROM immunization i, i.vaccineCode.coding c GROUP BY 1",
            vec!["vaccineCode"],
        ),
        (
            "SELECT APPROX_TOP_COUNT(class.code, 2), COUNTIF(status = \"finished\") FROM encounter",
            vec!["class", "status"],
        ),
    ] {
        assert_eq!(scanned_columns(&shell, sql), want, "{sql}");
    }
}

/// BigQuery's functions on literal inputs, each expected value worked out from BigQuery's
/// documented semantics (truncation toward zero, end-of-month clamping, offsets to UTC, NULL
/// conditions taking the ELSE branch, ...).
#[test]
fn bigquery_functions_give_bigquerys_values() {
    let shell = Shell::open(crate::sql::dataset(), None).unwrap();
    let value = |sql: &str| -> String {
        let batches = shell
            .run_sql(&format!("SELECT {sql}"))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        array_value_to_string(batches[0].column(0), 0).unwrap()
    };
    for (sql, want) in [
        ("TIMESTAMP('2020-01-01T10:00:00+02:00')", "2020-01-01T08:00:00"),
        ("TIMESTAMP('2020-01-01')", "2020-01-01T00:00:00"),
        ("TIMESTAMP_TRUNC(TIMESTAMP '2020-05-17 10:42:00', HOUR)", "2020-05-17T10:00:00"),
        ("DATE_TRUNC(DATE '2020-05-17', MONTH)", "2020-05-01"),
        ("TIMESTAMP_DIFF(TIMESTAMP '2020-01-01 00:00:00', TIMESTAMP '2020-01-01 00:00:01', SECOND)", "-1"),
        ("TIMESTAMP_DIFF(TIMESTAMP '2020-01-01 00:59:59', TIMESTAMP '2020-01-01 00:00:00', HOUR)", "0"),
        ("TIMESTAMP_DIFF(TIMESTAMP('2020-01-02T00:00:00Z'), TIMESTAMP('2020-01-01T10:00:00+02:00'), HOUR)", "16"),
        ("TIMESTAMP_ADD(TIMESTAMP('2020-01-01'), INTERVAL 90 MINUTE)", "2020-01-01T01:30:00"),
        ("TIMESTAMP_SUB(TIMESTAMP('2020-01-01'), INTERVAL 1 DAY)", "2019-12-31T00:00:00"),
        ("DATE_ADD(DATE '2020-01-31', INTERVAL 1 MONTH)", "2020-02-29"),
        ("DATE_SUB(DATE '2020-03-01', INTERVAL 2 DAY)", "2020-02-28"),
        ("TIMESTAMP_SECONDS(0)", "1970-01-01T00:00:00"),
        ("TIMESTAMP_MILLIS(1500)", "1970-01-01T00:00:01.500"),
        ("TIMESTAMP_MICROS(1000000)", "1970-01-01T00:00:01"),
        ("UNIX_MICROS(TIMESTAMP('1970-01-01T00:00:01Z'))", "1000000"),
        ("UNIX_SECONDS(TIMESTAMP('2020-01-01T00:00:00+01:00'))", "1577833200"),
        ("EXTRACT(DATE FROM TIMESTAMP('2020-01-01T23:30:00-02:00'))", "2020-01-02"),
        ("FORMAT_DATE('%Y-%m', DATE '2020-02-03')", "2020-02"),
        ("FORMAT_TIMESTAMP('%Y-%m-%d %H', TIMESTAMP('2020-01-01T10:00:00+02:00'))", "2020-01-01 08"),
        ("PARSE_DATE('%Y%m%d', '20200203')", "2020-02-03"),
        ("PARSE_TIMESTAMP('%Y-%m-%d %H:%M:%S', '2020-01-02 03:04:05')", "2020-01-02T03:04:05"),
        ("IF(NULL, 1, 2)", "2"),
        ("IF(1 < 2, 'a', 'b')", "a"),
        ("REGEXP_CONTAINS('abc123', r'\\d')", "true"),
        ("REGEXP_EXTRACT('abc123', r'\\d+')", "123"),
        ("REGEXP_EXTRACT('id=42;', r'id=(\\d+)')", "42"),
        ("SAFE_DIVIDE(1, 0)", ""),
        ("SAFE_DIVIDE(1, 4)", "0.25"),
        ("DIV(-7, 2)", "-3"),
        ("GENERATE_ARRAY(1, 3)", "[1, 2, 3]"),
        ("GENERATE_ARRAY(0, 10, 5)", "[0, 5, 10]"),
        ("CAST('2.5' AS FLOAT64)", "2.5"),
        ("CAST(1 AS BOOL)", "true"),
        ("CAST(12 AS STRING)", "12"),
        ("SAFE_CAST('x' AS INT64)", ""),
        ("CURRENT_DATE() = CURRENT_DATE", "true"),
        ("'b' IN UNNEST(['a', 'b'])", "true"),
        ("'c' NOT IN UNNEST(['a', 'b'])", "true"),
        ("ARRAY_LENGTH(['a', 'b'])", "2"),
    ] {
        assert_eq!(value(sql), want, "{sql}");
    }
    let rows = |sql: &str| -> Vec<String> {
        let batches = shell.run_sql(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        batches
            .iter()
            .flat_map(|b| {
                (0..b.num_rows())
                    .map(|i| array_value_to_string(b.column(0), i).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let v = "(VALUES (1, 'a'), (2, 'b'), (2, 'b'), (NULL, 'c'), (3, 'a')) AS t(x, s)";
    for (sql, want) in [
        (format!("SELECT COUNTIF(x > 1) FROM {v}"), "3"),
        (format!("SELECT LOGICAL_AND(x > 0) FROM {v}"), "true"),
        (format!("SELECT LOGICAL_OR(x > 2) FROM {v}"), "true"),
        (format!("SELECT APPROX_COUNT_DISTINCT(s) FROM {v}"), "3"),
        (
            format!("SELECT APPROX_TOP_COUNT(s, 2) FROM {v}"),
            "[{value: a, count: 2}, {value: b, count: 2}]",
        ),
        (
            format!("SELECT APPROX_QUANTILES(x, 2) FROM {v}"),
            "[1.0, 2.0, 3.0]",
        ),
        (format!("SELECT ANY_VALUE(s) IS NOT NULL FROM {v}"), "true"),
        (
            format!("SELECT STRING_AGG(DISTINCT s, \", \" ORDER BY s) FROM {v}"),
            "a, b, c",
        ),
    ] {
        assert_eq!(rows(&sql), [want], "{sql}");
    }
}
