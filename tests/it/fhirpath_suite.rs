//! The official FHIRPath test suite (R4: `../shared/fhirpath-tests/tests-fhir-r4.xml`, 935
//! tests) run as a user meets it: each input resource converted into a dataset, each test's
//! expression one column of a ViewDefinition over it (`collection: true`), its values compared
//! with the test's outputs. A test that expects an error passes when the view is refused or
//! fails. A report per test (pass, fail, not supported, each with the reason) is written to
//! `target/fhirpath/test_report.json` and summed on stderr; the counts may only go up (see
//! [`AT_LEAST`]), and nothing may panic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fhir2parquet::sql::Shell;
use fhir2parquet::view::ViewDefinition;
use serde_json::{json, Value};

use crate::view::batches_to_rows;
use crate::{convert_opts, shared};

/// Tests that pass today, a floor: raise it as the evaluator grows (never lower it).
const AT_LEAST: usize = 882;

struct Case {
    group: String,
    name: String,
    /// The input resource's file (`patient-example.json`), or none (literals only).
    input: Option<String>,
    expression: String,
    predicate: bool,
    /// `syntax`, `semantic`, `execution`: the test expects an error.
    invalid: Option<String>,
    /// (type, text) of each expected value, in order.
    outputs: Vec<(String, String)>,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(shared("fhirpath-tests/tests-fhir-r4.xml")).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let mut out = Vec::new();
    for group in doc
        .root_element()
        .children()
        .filter(|n| n.has_tag_name("group"))
    {
        for test in group.children().filter(|n| n.has_tag_name("test")) {
            let expr = test
                .children()
                .find(|n| n.has_tag_name("expression"))
                .unwrap();
            out.push(Case {
                group: group.attribute("name").unwrap_or_default().to_string(),
                name: test.attribute("name").unwrap_or_default().to_string(),
                input: test
                    .attribute("inputfile")
                    .map(|f| f.replace(".xml", ".json")),
                expression: expr.text().unwrap_or_default().to_string(),
                predicate: test.attribute("predicate") == Some("true"),
                invalid: expr.attribute("invalid").map(str::to_string),
                outputs: test
                    .children()
                    .filter(|n| n.has_tag_name("output"))
                    .map(|o| {
                        (
                            o.attribute("type").unwrap_or_default().to_string(),
                            o.text().unwrap_or_default().to_string(),
                        )
                    })
                    .collect(),
            });
        }
    }
    out
}

/// Each input file converted into a dataset of its own: (resource type, shell).
fn datasets(tmp: &Path, cases: &[Case]) -> BTreeMap<String, (String, Shell)> {
    let mut out = BTreeMap::new();
    let mut files: Vec<String> = cases.iter().filter_map(|c| c.input.clone()).collect();
    files.push("patient-example.json".into());
    files.sort();
    files.dedup();
    for f in files {
        let resource: Value =
            serde_json::from_slice(&std::fs::read(shared(&format!("fhirpath-tests/{f}"))).unwrap())
                .unwrap();
        let t = resource["resourceType"].as_str().unwrap().to_string();
        let input = tmp.join(format!("{f}.ndjson"));
        std::fs::write(&input, resource.to_string()).unwrap();
        let dataset: PathBuf = tmp.join(format!("{f}.out"));
        fhir2parquet::convert::run(&[input], &convert_opts(&dataset)).unwrap();
        out.insert(f, (t, Shell::open(&dataset, None).unwrap()));
    }
    out
}

/// What a test came to.
enum Outcome {
    Pass,
    /// A wrong answer, or no error where one was expected.
    Fail(String),
    /// Refused by the view compiler (a function or form it does not have).
    NotSupported(String),
}

/// Whether a value of ours is the expected `(type, text)`.
fn same(want: &(String, String), got: &Value) -> bool {
    let (t, text) = want;
    match t.as_str() {
        "boolean" => got.as_bool().map(|b| b.to_string()) == Some(text.clone()),
        "integer" | "decimal" => {
            let g = match got {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.parse().ok(),
                _ => None,
            };
            match (g, text.parse::<f64>()) {
                (Some(g), Ok(w)) => (g - w).abs() <= 1e-9 * w.abs().max(1.0),
                _ => false,
            }
        }
        "date" | "dateTime" | "time" => {
            let w = text.trim_start_matches('@').trim_start_matches('T');
            got.as_str()
                .is_some_and(|g| g.trim_start_matches('T') == w || same_instant(g, w))
        }
        "Quantity" => {
            // `4 'kg'`, `41 'a'`: an element's value and code or unit; a quantity computed by
            // a view is the text of its literal (`4 'kg'`).
            let (value, unit) = text.split_once(' ').unwrap_or((text, ""));
            let unit = unit.trim_matches('\'');
            let (gv, gu) = match got {
                Value::String(t) => {
                    let (v, u) = t.split_once(' ').unwrap_or((t, ""));
                    (json!(v), json!(u.trim_matches('\'')))
                }
                _ => (got["value"].clone(), got["code"].clone()),
            };
            same(&("decimal".into(), value.into()), &gv) && (gu == unit || got["unit"] == unit)
        }
        // No type given (the boundary tests): a number by value, a date or time by its text
        // after `@`, else the text.
        "" if text.parse::<f64>().is_ok() => same(&("decimal".into(), text.clone()), got),
        "" if text.starts_with('@') => same(&("dateTime".into(), text.clone()), got),
        _ => got.as_str() == Some(text.as_str()),
    }
}

/// Two date-times that are the same instant (ours may be printed in UTC, without a zone).
fn same_instant(got: &str, want: &str) -> bool {
    let parse = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&chrono::Utc))
            .ok()
            .or_else(|| {
                chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                    .ok()
                    .map(|t| t.and_utc())
            })
    };
    matches!((parse(got), parse(want)), (Some(a), Some(b)) if a == b)
}

fn run(case: &Case, sets: &BTreeMap<String, (String, Shell)>) -> Outcome {
    let file = case.input.as_deref().unwrap_or("patient-example.json");
    let (resource, shell) = &sets[file];
    let path = match case.predicate {
        true => format!("({}).exists()", case.expression),
        false => case.expression.clone(),
    };
    let view = json!({"resourceType": "ViewDefinition", "resource": resource, "status": "active",
                      "select": [{"column": [{"name": "v", "path": path, "collection": true}]}]});
    let expect_error = case.invalid.is_some();
    let compiled =
        ViewDefinition::from_json(&view).and_then(|v| fhir2parquet::view::frame(shell, &v));
    let frame = match compiled {
        Ok(f) => f,
        Err(_) if expect_error => return Outcome::Pass,
        Err(e) => return Outcome::NotSupported(format!("{e:#}")),
    };
    let rows = match shell.runtime().block_on(frame.collect()) {
        Ok(b) => batches_to_rows(&b),
        Err(_) if expect_error => return Outcome::Pass,
        Err(e) => return Outcome::Fail(format!("error: {e:#}")),
    };
    if expect_error {
        return Outcome::Fail(format!("expected an error, got {rows:?}"));
    }
    let got: Vec<Value> = match rows.as_slice() {
        [row] => row["v"].as_array().cloned().unwrap_or_default(),
        _ => return Outcome::Fail(format!("{} rows", rows.len())),
    };
    let ok =
        got.len() == case.outputs.len() && case.outputs.iter().zip(&got).all(|(w, g)| same(w, g));
    match ok {
        true => Outcome::Pass,
        false => Outcome::Fail(format!("gave {got:?}, expected {:?}", case.outputs)),
    }
}

#[test]
fn the_official_fhirpath_suite() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = cases();
    assert_eq!(cases.len(), 935, "the suite's active tests");
    let sets = datasets(tmp.path(), &cases);
    let mut report: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let (mut pass, mut fail, mut unsupported, mut panics) = (0, 0, 0, Vec::new());
    for c in &cases {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(c, &sets)));
        let result = match outcome {
            Ok(Outcome::Pass) => {
                pass += 1;
                json!({"passed": true})
            }
            Ok(Outcome::Fail(why)) => {
                fail += 1;
                json!({"passed": false, "reason": why})
            }
            Ok(Outcome::NotSupported(why)) => {
                unsupported += 1;
                json!({"passed": false, "notSupported": true, "reason": why})
            }
            Err(_) => {
                panics.push(format!("{}: {}", c.name, c.expression));
                json!({"passed": false, "reason": "panicked"})
            }
        };
        report
            .entry(c.group.clone())
            .or_default()
            .push(json!({"name": c.name, "expression": c.expression, "result": result}));
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fhirpath/test_report.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    eprintln!(
        "FHIRPath suite: {pass} of {} pass, {fail} fail, {unsupported} not supported, {} panic \
         (report: {})",
        cases.len(),
        panics.len(),
        path.display()
    );
    assert!(panics.is_empty(), "panics: {panics:#?}");
    assert!(
        pass >= AT_LEAST,
        "{pass} pass, fewer than the {AT_LEAST} before"
    );
}
