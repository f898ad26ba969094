//! SQL on FHIR v2: the official test suite, run as a user would (NDJSON → convert → view over the
//! Parquet), with the report written in the official `test_report.json` format.

use std::collections::BTreeMap;
use std::path::Path;

use fhir2parquet::sql::Shell;
use fhir2parquet::view::ViewDefinition;
use serde_json::{json, Value};

use crate::{bin, convert_opts, shared};

/// Cases of the shared (older) suite whose expectation the current specification changed, and
/// how: they are run with the current expectation.
pub(crate) const SUPERSEDED: &[(&str, &str)] = &[
    (
        "fhirpath.json/string join",
        "join() of an empty collection is empty (FHIRPath 3.0), not ''",
    ),
    (
        "fhirpath.json/string join: default separator",
        "join() of an empty collection is empty (FHIRPath 3.0), not ''",
    ),
];

/// The current expectation of a superseded case: `''` (an empty join) becomes null.
pub(crate) fn current_expectation(case: &Value) -> Value {
    let mut case = case.clone();
    for row in case["expect"].as_array_mut().unwrap() {
        for v in row.as_object_mut().unwrap().values_mut() {
            if v == "" {
                *v = Value::Null;
            }
        }
    }
    case
}

/// A result value as the reference runner compares it: numbers by value.
pub(crate) fn normalize(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64().unwrap()),
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), normalize(v))).collect())
        }
        other => other.clone(),
    }
}

/// Numbers to 12 significant digits, recursively: engines print decimals differently (all 18
/// places, or the shortest double), and JSON readers may round a long decimal text to a
/// neighbouring double.
pub(crate) fn rounded(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(format!("{:.11e}", n.as_f64().unwrap())),
        Value::Array(a) => Value::Array(a.iter().map(rounded).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), rounded(v))).collect()),
        other => other.clone(),
    }
}

/// Rows as sorted canonical JSON texts.
pub(crate) fn canonical(rows: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = rows
        .iter()
        .map(|r| {
            let sorted: BTreeMap<String, Value> = r
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), normalize(v)))
                .collect();
            serde_json::to_string(&sorted).unwrap()
        })
        .collect();
    out.sort();
    out
}

/// Batches as JSON rows, every column present (null as null).
pub(crate) fn batches_to_rows(batches: &[arrow::array::RecordBatch]) -> Vec<Value> {
    let mut buf = Vec::new();
    {
        let mut w = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::LineDelimited>(&mut buf);
        for b in batches {
            w.write(b).unwrap();
        }
        w.finish().unwrap();
    }
    String::from_utf8(buf)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runs one case: Ok(()) when it passes, Err(why) when not.
fn run_case(shell: &Shell, case: &Value) -> Result<(), String> {
    run_case_with(shell, case, false)?;
    // The same rows when every path is read from the resources' JSON (the way to `_overflow`).
    run_case_with(shell, case, true).map_err(|e| format!("over JSON: {e}"))
}

fn run_case_with(shell: &Shell, case: &Value, over_json: bool) -> Result<(), String> {
    let outcome = ViewDefinition::from_json(&case["view"])
        .and_then(|v| match over_json {
            false => fhir2parquet::view::batches(shell, &v),
            true => Ok(shell
                .runtime()
                .block_on(fhir2parquet::view::frame_over_json(shell, &v)?.collect())?),
        })
        .map_err(|e| format!("{e:#}"));
    if case.get("expectError").and_then(Value::as_bool) == Some(true) {
        return match outcome {
            Err(_) => Ok(()),
            Ok(_) => Err("expected an error, the view ran".into()),
        };
    }
    check_rows(case, &batches_to_rows(&outcome?))
}

/// Whether a view's rows are what the case expects, compared as the reference runner compares
/// them: the count (`expectCount`), or the columns and the rows, unordered.
pub(crate) fn check_rows(case: &Value, rows: &[Value]) -> Result<(), String> {
    if let Some(n) = case.get("expectCount").and_then(Value::as_u64) {
        return if rows.len() as u64 == n {
            Ok(())
        } else {
            Err(format!("expected {n} rows, got {}", rows.len()))
        };
    }
    let expect = case["expect"].as_array().ok_or("no expect")?;
    if let (Some(first), Some(got)) = (expect.first(), rows.first()) {
        let mut want: Vec<&String> = first.as_object().unwrap().keys().collect();
        let mut have: Vec<&String> = got.as_object().unwrap().keys().collect();
        want.sort();
        have.sort();
        if want != have {
            return Err(format!("expected columns {want:?}, got {have:?}"));
        }
    }
    let (want, got) = (canonical(expect), canonical(rows));
    if want == got {
        Ok(())
    } else {
        Err(format!("expected rows {want:?}, got {got:?}"))
    }
}

/// One file of the official suite, its resources converted: the file name, its JSON and the
/// dataset.
pub(crate) struct SuiteFile {
    pub name: String,
    pub suite: Value,
    pub dataset: std::path::PathBuf,
}

/// Every file of the official suite, each file's resources as NDJSON → `convert` → a dataset
/// under `tmp`.
pub(crate) fn suite_files(tmp: &Path) -> Vec<SuiteFile> {
    let dir = shared("sql-on-fhir-v2/tests");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 22, "the suite has 22 files");
    files
        .iter()
        .map(|file| {
            let name = file.file_name().unwrap().to_str().unwrap().to_string();
            let suite: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
            let input = tmp.join(format!("{name}.ndjson"));
            let lines: Vec<String> = suite["resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.to_string())
                .collect();
            std::fs::write(&input, lines.join("\n")).unwrap();
            let dataset = tmp.join(format!("{name}.out"));
            let record = fhir2parquet::convert::run(&[input], &convert_opts(&dataset)).unwrap();
            assert!(
                record.problems().is_empty(),
                "{name}: {:?}",
                record.problems()
            );
            SuiteFile {
                name,
                suite,
                dataset,
            }
        })
        .collect()
}

#[test]
fn sql_on_fhir_v2_suite() {
    let tmp = tempfile::tempdir().unwrap();
    let mut report = serde_json::Map::new();
    let mut failures = Vec::new();
    let mut cases = 0;
    let mut superseded = 0;
    for SuiteFile {
        name,
        suite,
        dataset,
    } in suite_files(tmp.path())
    {
        let shell = Shell::open(&dataset, None).unwrap();
        let mut results = Vec::new();
        for case in suite["tests"].as_array().unwrap() {
            cases += 1;
            let title = case["title"].as_str().unwrap();
            let id = format!("{name}/{title}");
            if let Some((_, why)) = SUPERSEDED.iter().find(|s| s.0 == id) {
                superseded += 1;
                if let Err(e) = run_case(&shell, &current_expectation(case)) {
                    failures.push((id, format!("with the current expectation: {e}")));
                }
                let why = format!("superseded: {why}");
                results.push(json!({"name": title, "result": {"passed": false, "reason": why}}));
                continue;
            }
            let result = match run_case(&shell, case) {
                Ok(()) => json!({"passed": true}),
                Err(e) => {
                    failures.push((id, e.clone()));
                    json!({"passed": false, "error": e})
                }
            };
            results.push(json!({"name": title, "result": result}));
        }
        report.insert(name, json!({ "tests": results }));
    }
    assert_eq!(cases, 134, "the suite has 134 cases");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sql-on-fhir/test_report.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&Value::Object(report)).unwrap(),
    )
    .unwrap();
    assert_eq!(
        superseded,
        SUPERSEDED.len(),
        "every superseded case is in the suite"
    );
    assert!(
        failures.is_empty(),
        "{} of {cases} cases fail:\n{}",
        failures.len(),
        failures
            .iter()
            .map(|(id, e)| format!("- {id}: {e}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Converts the small Synthea export once per test.
fn synthea_small(tmp: &Path) -> std::path::PathBuf {
    let out = tmp.join("out");
    let o = crate::convert_quiet(&shared("fhir-data/synthea-r4-small"), &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

fn example_view(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/views")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

/// Runs `view VIEW --data DATA -o DEST`.
fn view_to(view: &str, data: &Path, dest: &Path) -> std::process::Output {
    bin(&[
        "view",
        view,
        "--data",
        data.to_str().unwrap(),
        "-o",
        dest.to_str().unwrap(),
    ])
}

/// NDJSON lines of one resource type in a folder of NDJSON(.gz) files.
fn resources(dir: &Path, resource_type: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.to_str().unwrap().contains(".ndjson") {
            for l in crate::read_lines(&p) {
                let v: Value = serde_json::from_str(&l).unwrap();
                if v["resourceType"] == resource_type {
                    out.push(v);
                }
            }
        }
    }
    out
}

#[test]
fn view_command_prints_and_writes_every_format() {
    let tmp = tempfile::tempdir().unwrap();
    let out = synthea_small(tmp.path());
    let data = out.to_str().unwrap();
    let obs_view = example_view("observations.json");

    // Expected: one row per Observation.code.coding, computed from the NDJSON.
    let observations = resources(&shared("fhir-data/synthea-r4-small"), "Observation");
    let codings: usize = observations
        .iter()
        .map(|o| o["code"]["coding"].as_array().map_or(0, |c| c.len()))
        .sum();
    assert!(codings > 100);

    let o = bin(&["view", &obs_view, "--data", data, "--format", "ndjson"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: Vec<Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), codings);
    // Every row carries every column, null as null.
    for r in &rows {
        assert_eq!(r.as_object().unwrap().len(), 11, "{r}");
    }
    // Values agree with the NDJSON: the patient of each observation, its LOINC code.
    let by_id: std::collections::HashMap<&str, &Value> = observations
        .iter()
        .map(|o| (o["id"].as_str().unwrap(), o))
        .collect();
    for r in &rows {
        let src = by_id[r["id"].as_str().unwrap()];
        assert_eq!(
            crate::queries::id_of(&src["subject"]),
            r["patient_id"],
            "{r}"
        );
        let codes: Vec<&str> = src["code"]["coding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["code"].as_str().unwrap())
            .collect();
        assert!(codes.contains(&r["code"].as_str().unwrap()));
        match src["valueQuantity"]["value"].as_f64() {
            Some(v) => {
                let got: f64 = match &r["value"] {
                    Value::String(s) => s.parse().unwrap(),
                    other => other.as_f64().unwrap(),
                };
                assert!((got - v).abs() < 1e-9, "{r}");
            }
            None => assert!(r["value"].is_null(), "{r}"),
        }
    }

    // Files by extension: Parquet, CSV, NDJSON.
    let nd = tmp.path().join("obs.ndjson");
    let o = view_to(&obs_view, &out, &nd);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(&nd).unwrap().lines().count(),
        codings
    );
    let pq = tmp.path().join("obs.parquet");
    let o = view_to(&obs_view, &out, &pq);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        crate::parquet_metadata(&pq).file_metadata().num_rows() as usize,
        codings
    );
    let csv = tmp.path().join("obs.csv");
    let o = view_to(&obs_view, &out, &csv);
    assert!(o.status.success());
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.starts_with(
        "id,patient_id,encounter_id,status,effective,value,unit,value_code,system,code,display\n"
    ));
    assert_eq!(text.lines().count(), codings + 1);

    // A folder of views → one Parquet table per view.
    let dir = tmp.path().join("flat");
    let views = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/views");
    let o = view_to(views.to_str().unwrap(), &out, &dir);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut written: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    written.sort();
    assert_eq!(
        written,
        [
            "condition_codes.parquet",
            "observations.parquet",
            "patient_demographics.parquet",
            "patient_geolocation.parquet"
        ]
    );
    let patients = resources(&shared("fhir-data/synthea-r4-small"), "Patient");
    let metadata = crate::parquet_metadata(&dir.join("patient_demographics.parquet"));
    assert_eq!(metadata.file_metadata().num_rows() as usize, patients.len());
    // One row per address, its geolocation read past the typed columns.
    let addresses: usize = patients
        .iter()
        .map(|p| p["address"].as_array().map_or(0, Vec::len))
        .sum();
    let metadata = crate::parquet_metadata(&dir.join("patient_geolocation.parquet"));
    assert_eq!(metadata.file_metadata().num_rows() as usize, addresses);
}

#[test]
fn an_invalid_view_names_the_bad_part_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = synthea_small(tmp.path());
    let views = tmp.path().join("views");
    std::fs::create_dir(&views).unwrap();
    std::fs::copy(example_view("observations.json"), views.join("a.json")).unwrap();
    let bad = json!({
        "resource": "Patient",
        "select": [
            {"column": [{"name": "id", "path": "id"}]},
            {"forEach": "name", "column": [{"name": "family", "path": "familly"}]}
        ]
    });
    std::fs::write(views.join("b.json"), bad.to_string()).unwrap();
    let dest = tmp.path().join("flat");
    let o = view_to(views.to_str().unwrap(), &out, &dest);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("b.json"), "{err}");
    assert!(err.contains("select[1].column[0].path"), "{err}");
    assert!(err.contains("HumanName has no element 'familly'"), "{err}");
    assert!(!dest.exists(), "nothing is written when a view is invalid");

    // A list column goes to CSV as JSON text.
    let lists = tmp.path().join("lists.json");
    let view = json!({"resource": "Patient", "select": [{"column": [
        {"name": "id", "path": "id"},
        {"name": "given", "path": "name.given", "collection": true}]}]});
    std::fs::write(&lists, view.to_string()).unwrap();
    let csv = tmp.path().join("lists.csv");
    let o = view_to(lists.to_str().unwrap(), &out, &csv);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&csv).unwrap();
    let first = &resources(&shared("fhir-data/synthea-r4-small"), "Patient")[0];
    let given: Vec<&Value> = first["name"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|n| n["given"].as_array().into_iter().flatten())
        .collect();
    assert!(!given.is_empty());
    let id = first["id"].as_str().unwrap();
    let line = text.lines().find(|l| l.starts_with(id)).unwrap();
    let json_text = serde_json::to_string(&given).unwrap();
    assert_eq!(line, format!("{id},\"{}\"", json_text.replace('"', "\"\"")));

    // Each kind of mistake, located.
    let cases = [
        (json!({"select": []}), "resource: is required"),
        (
            json!({"resource": "Patient", "select": [{"column": [{"name": "x", "path": "name.family.("}]}]}),
            "select[0].column[0].path",
        ),
        (
            json!({"resource": "Patient", "select": [{"column": [{"name": "x", "path": "id"}]}], "where": [{"path": "name.family"}]}),
            "where[0].path: evaluates to string",
        ),
        (
            json!({"resource": "Patient", "select": [{"column": [{"name": "x", "path": "id"}, {"name": "x", "path": "gender"}]}]}),
            "select[0].column[1].name",
        ),
        (
            json!({"resource": "Patient", "select": [{"unionAll": [{"column": [{"name": "a", "path": "id"}]}, {"column": [{"name": "b", "path": "id"}]}]}]}),
            "select[0].unionAll[1]",
        ),
        (
            json!({"resource": "Patient", "select": [{"column": [{"name": "x", "path": "name.where(use = %missing)"}]}]}),
            "%missing is not a constant",
        ),
        (
            json!({"resource": "Patient", "select": [{"column": [{"name": "x", "path": "deceased"}]}]}),
            "ofType",
        ),
    ];
    let shell = Shell::open(&out, None).unwrap();
    for (view, want) in cases {
        let err = ViewDefinition::from_json(&view)
            .and_then(|v| fhir2parquet::view::frame(&shell, &v))
            .map(|_| ())
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains(want), "{view}: {msg}");
    }
    // More than one value where a column expects one: an error at run time, with the column.
    let many = json!({"resource": "Patient", "select": [{"column": [{"name": "g", "path": "name.given"}]}]});
    let err = fhir2parquet::view::batches(&shell, &ViewDefinition::from_json(&many).unwrap())
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("select[0].column[0].path"),
        "{err:#}"
    );
    assert!(format!("{err:#}").contains("collection"), "{err:#}");
}

#[test]
fn views_are_tables_in_the_sql_shell() {
    let tmp = tempfile::tempdir().unwrap();
    let out = synthea_small(tmp.path());
    let patients = resources(&shared("fhir-data/synthea-r4-small"), "Patient");
    let female = patients.iter().filter(|p| p["gender"] == "female").count();
    // --view: a view joined with a resource table and with another view.
    let o = bin(&[
        "sql",
        out.to_str().unwrap(),
        "--view",
        &example_view("patient_demographics.json"),
        "--view",
        &example_view("observations.json"),
        "--format",
        "csv",
        "-c",
        "SELECT count(DISTINCT p.id) AS n FROM patient_demographics p \
         JOIN Patient r ON r.id = p.id \
         JOIN observations o ON o.patient_id = p.id \
         WHERE p.gender = 'female'",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    let observed_female = {
        let obs = resources(&shared("fhir-data/synthea-r4-small"), "Observation");
        let ids: std::collections::HashSet<String> = obs
            .iter()
            .map(|o| crate::queries::id_of(&o["subject"]))
            .collect();
        patients
            .iter()
            .filter(|p| p["gender"] == "female" && ids.contains(p["id"].as_str().unwrap()))
            .count()
    };
    assert!(observed_female > 0 && observed_female <= female);
    assert_eq!(
        text.lines().nth(1),
        Some(observed_female.to_string().as_str()),
        "{text}"
    );

    // \view in a script on stdin, under another name.
    let script = format!(
        "\\view {} demo\nSELECT gender, count(*) AS n FROM demo GROUP BY gender ORDER BY gender;\n",
        example_view("patient_demographics.json")
    );
    let o = crate::bin_stdin(
        &["sql", out.to_str().unwrap(), "--format", "csv"],
        script.as_bytes(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains(&format!("female,{female}")), "{text}");
}

#[test]
fn fhirpath_beyond_the_suite() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.ndjson");
    let resources = [
        json!({"resourceType": "Patient", "id": "a", "birthDate": "1970-06", "gender": "female",
               "name": [{"family": "F1", "given": ["G1", "G2"]}, {"family": "F2", "given": ["G3"]}],
               "telecom": [{"system": "phone", "value": "1"}, {"system": "email", "value": "e"}],
               "multipleBirthInteger": 7}),
        json!({"resourceType": "Patient", "id": "b", "active": true}),
    ];
    let text: Vec<String> = resources.iter().map(|r| r.to_string()).collect();
    std::fs::write(&input, text.join("\n")).unwrap();
    let out = tmp.path().join("out");
    fhir2parquet::convert::run(&[input], &convert_opts(&out)).unwrap();
    let shell = Shell::open(&out, None).unwrap();
    let column = |path: &str| -> Vec<Value> {
        let view = json!({"resource": "Patient", "select": [{"column": [
            {"name": "id", "path": "id"}, {"name": "v", "path": path, "collection": true}]}]});
        let v = ViewDefinition::from_json(&view).unwrap();
        let mut rows = batches_to_rows(&fhir2parquet::view::batches(&shell, &v).unwrap());
        rows.sort_by_key(|r| r["id"].as_str().unwrap().to_string());
        rows.into_iter().map(|r| normalize(&r["v"])).collect()
    };
    assert_eq!(column("name.given.last()"), [json!(["G3"]), json!([])]);
    assert_eq!(column("name.given.count()"), [json!([3.0]), json!([0.0])]);
    assert_eq!(
        column("name.family | name.given.first()"),
        [json!(["F1", "F2", "G1"]), json!([])]
    );
    assert_eq!(
        column("multipleBirth.ofType(integer) div 2"),
        [json!([3.0]), json!([])]
    );
    assert_eq!(
        column("multipleBirth.ofType(integer) mod 4"),
        [json!([3.0]), json!([])]
    );
    assert_eq!(
        column("multipleBirth.ofType(integer) / 2"),
        [json!([3.5]), json!([])]
    );
    assert_eq!(
        column("-multipleBirth.ofType(integer) + 1.5"),
        [json!([-5.5]), json!([])]
    );
    assert_eq!(column("active xor true"), [json!([]), json!([false])]);
    assert_eq!(column("active implies false"), [json!([]), json!([false])]);
    // `~`: one side empty is false (FHIRPath 6.1.3), case and white space aside.
    assert_eq!(column("gender ~ 'female'"), [json!([true]), json!([false])]);
    assert_eq!(
        column("gender ~ ' FEMALE'"),
        [json!([true]), json!([false])]
    );
    // String `+` with an empty side is empty; `&` reads empty as ''.
    assert_eq!(column("gender + '!'"), [json!(["female!"]), json!([])]);
    assert_eq!(column("gender & '!'"), [json!(["female!"]), json!(["!"])]);
    // Union drops repeats; collection equality needs the same items in order.
    assert_eq!(
        column("(name.family | name.family).count()"),
        [json!([2.0]), json!([0.0])]
    );
    assert_eq!(
        column("name.given = ('G1' | 'G2')"),
        [json!([false]), json!([])]
    );
    assert_eq!(
        column("name.first().given = ('G1' | 'G2')"),
        [json!([true]), json!([])]
    );
    assert_eq!(
        column("name.where(given = 'G3').family"),
        [json!(["F2"]), json!([])]
    );
    // Dates by their components, to the precision both have.
    assert_eq!(column("birthDate > @1970"), [json!([]), json!([])]);
    assert_eq!(column("birthDate > @1969"), [json!([true]), json!([])]);
    assert_eq!(column("birthDate = @1970-06-15"), [json!([]), json!([])]);
    // A calendar duration added to a date keeps its precision.
    assert_eq!(
        column("birthDate + 18 years"),
        [json!(["1988-06"]), json!([])]
    );
    assert_eq!(
        column("birthDate - 7 months"),
        [json!(["1969-11"]), json!([])]
    );
    assert_eq!(
        column("name.family.first() & '-' & gender"),
        [json!(["F1-female"]), json!(["-"])]
    );
    assert_eq!(
        column("birthDate.lowBoundary()"),
        [json!(["1970-06-01"]), json!([])]
    );
    assert_eq!(
        column("birthDate.highBoundary()"),
        [json!(["1970-06-30"]), json!([])]
    );
    assert_eq!(
        column("birthDate < @1980-01-01"),
        [json!([true]), json!([])]
    );
    assert_eq!(
        column("telecom.where(system = 'email').value"),
        [json!(["e"]), json!([])]
    );
    assert_eq!(
        column("telecom.exists(system = 'phone')"),
        [json!([true]), json!([false])]
    );
    assert_eq!(column("Patient.name[1].given"), [json!(["G3"]), json!([])]);
    assert_eq!(
        column("name.where($this.family = 'F2').given"),
        [json!(["G3"]), json!([])]
    );
    assert_eq!(column("{}"), [json!([]), json!([])]);
}

#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    use std::process::{Command, Stdio};
    let tmp = tempfile::tempdir().unwrap();
    let out = synthea_small(tmp.path());
    let view = example_view("observations.json");
    let data = out.to_str().unwrap();
    for args in [
        vec!["view", &view, "--data", data, "--format", "csv"],
        vec!["view", &view, "--data", data, "--format", "table"],
        // The warehouse statements, printed (a panic on the closed pipe before).
        vec!["warehouse", "spark", data],
        vec!["schema", "Observation"],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fhir2parquet"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // like `| head -0`
        let o = child.wait_with_output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        // Nothing but the command's own notes (the warehouse's about Delta tables).
        assert!(args[0] == "warehouse" || err.is_empty(), "{args:?}: {err}");
    }
}

#[test]
fn csv_and_table_output_read_as_people_expect() {
    let tmp = tempfile::tempdir().unwrap();
    let out = synthea_small(tmp.path());
    let obs = resources(&shared("fhir-data/synthea-r4-small"), "Observation");
    let o = obs
        .iter()
        .find(|o| o["valueQuantity"]["value"].is_f64())
        .unwrap();
    let id = o["id"].as_str().unwrap();
    let sql = format!(
        "SELECT valueQuantity.value AS v, valueQuantity AS q, code.coding AS c FROM Observation WHERE id = '{id}'"
    );
    let r = bin(&["sql", out.to_str().unwrap(), "--format", "csv", "-c", &sql]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let text = String::from_utf8(r.stdout).unwrap();
    let mut reader = text.lines();
    assert_eq!(reader.next(), Some("v,q,c"));
    let row = reader.next().unwrap();
    // The decimal without the trailing zeros of its scale, equal to the source's value.
    let v: &str = row.split(',').next().unwrap();
    assert!(!v.ends_with('0'), "{v}");
    assert_eq!(
        v.parse::<f64>().unwrap(),
        o["valueQuantity"]["value"].as_f64().unwrap()
    );
    // The struct and the list as JSON text, in CSV quoting.
    assert!(row.contains(r#""{""id"":null,""value"":"#), "{row}");
    let code = o["code"]["coding"][0]["code"].as_str().unwrap();
    assert!(row.contains(&format!(r#"""code"":""{code}"""#)), "{row}");
}

/// `forEach` over the resource itself (`where(...)`) gives the resources the path keeps; a
/// view with no rows still carries its columns in every output (CSV header, Parquet schema,
/// JSON `[]`).
#[test]
fn for_each_over_the_resource_and_views_with_no_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let out = synthea_small(tmp.path());
    let data = out.to_str().unwrap();
    let patients = resources(&shared("fhir-data/synthea-r4-small"), "Patient");
    let mut want: Vec<String> = patients
        .iter()
        .filter(|p| p["gender"] == "male")
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    want.sort();
    assert!(!want.is_empty() && want.len() < patients.len());
    let view = tmp.path().join("male.json");
    std::fs::write(
        &view,
        json!({"resourceType": "ViewDefinition", "resource": "Patient", "status": "active",
               "select": [{"forEach": "where(gender = 'male')",
                           "column": [{"name": "id", "path": "id"},
                                      {"name": "g", "path": "gender"}]}]})
        .to_string(),
    )
    .unwrap();
    let o = bin(&[
        "view",
        view.to_str().unwrap(),
        "--data",
        data,
        "--format",
        "ndjson",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut got: Vec<String> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["g"], "male");
            v["id"].as_str().unwrap().to_string()
        })
        .collect();
    got.sort();
    assert_eq!(got, want);

    let empty = tmp.path().join("empty.json");
    std::fs::write(
        &empty,
        json!({"resourceType": "ViewDefinition", "resource": "Patient", "status": "active",
               "select": [{"column": [{"name": "id", "path": "id"},
                                      {"name": "family", "path": "name.family.first()"}]}],
               "where": [{"path": "gender = 'no such gender'"}]})
        .to_string(),
    )
    .unwrap();
    let empty = empty.to_str().unwrap();
    let o = bin(&["view", empty, "--data", data, "--format", "csv"]);
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout), "id,family\n");
    let o = bin(&["view", empty, "--data", data, "--format", "json"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "[]");
    let csv = tmp.path().join("e.csv");
    assert!(view_to(empty, &out, &csv).status.success());
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), "id,family\n");
    let pq = tmp.path().join("e.parquet");
    assert!(view_to(empty, &out, &pq).status.success());
    let reader =
        parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&pq).unwrap())
            .unwrap();
    use parquet::file::reader::FileReader;
    let meta = reader.metadata();
    assert_eq!(meta.file_metadata().num_rows(), 0);
    let names: Vec<&str> = meta
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name())
        .collect();
    assert_eq!(names, ["id", "family"]);
}
