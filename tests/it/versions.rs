//! FHIR R4, R4B and R5 beside each other: each version's schema follows its definitions
//! (counted and compared from `../shared/fhir-definitions`, not from our model), every
//! specification example of R4B and R5 comes back whole, views and SQL read R5 data by R5's
//! definitions, and a dataset holds one version.

use std::collections::BTreeSet;
use std::path::Path;

use arrow::array::Array;
use arrow::datatypes::DataType;
use fhir2parquet::schema::node::arrow_schema;
use fhir2parquet::schema::FhirVersion;
use serde_json::Value;

use crate::{assert_same_resources, bin, convert_opts, read_lines, shared};

/// The StructureDefinitions of a version's bundle.
fn definitions(version: &str, bundle: &str) -> Vec<Value> {
    let path = shared(&format!("fhir-definitions/{version}/{bundle}"));
    let b: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"].clone())
        .filter(|r| r["resourceType"] == "StructureDefinition")
        .collect()
}

/// The concrete resource types a version's definitions define.
fn defined_resources(version: &str) -> BTreeSet<String> {
    definitions(version, "Bundle-resources.json")
        .iter()
        .filter(|sd| {
            sd["kind"] == "resource"
                && sd["derivation"] == "specialization"
                && sd["abstract"] != true
        })
        .map(|sd| sd["type"].as_str().unwrap().to_string())
        .collect()
}

/// The snapshot element `id` of a version's definitions: (type codes, max).
fn element(version: &str, id: &str) -> (Vec<String>, String) {
    let ty = id.split('.').next().unwrap();
    for bundle in ["Bundle-resources.json", "Bundle-types.json"] {
        for sd in definitions(version, bundle) {
            if sd["type"] != ty || sd["derivation"] == "constraint" {
                continue;
            }
            for e in sd["snapshot"]["element"].as_array().unwrap() {
                if e["id"] == id {
                    let codes = e["type"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|t| t["code"].as_str().unwrap().to_string())
                        .collect();
                    return (codes, e["max"].as_str().unwrap().to_string());
                }
            }
        }
    }
    panic!("{version}: no element {id}");
}

fn version_dir(v: FhirVersion) -> &'static str {
    v.name()
}

/// The Arrow type of a top-level column, or of a field under it (`photo.size`), lists looked
/// through.
fn column_type(v: FhirVersion, ty: &str, path: &str) -> DataType {
    let schema = arrow_schema(v, ty).unwrap();
    let mut parts = path.split('.');
    let mut dt = schema
        .field_with_name(parts.next().unwrap())
        .unwrap()
        .data_type()
        .clone();
    for p in parts {
        if let DataType::List(f) = &dt {
            dt = f.data_type().clone();
        }
        let DataType::Struct(fields) = &dt else {
            panic!("{ty}.{path}: {dt:?}")
        };
        dt = fields
            .iter()
            .find(|f| f.name() == p)
            .unwrap()
            .data_type()
            .clone();
    }
    dt
}

#[test]
fn each_versions_resource_types_are_those_its_definitions_define() {
    for v in FhirVersion::ALL {
        let want = defined_resources(version_dir(v));
        let got: BTreeSet<String> = v
            .model()
            .resource_types()
            .into_iter()
            .map(str::to_string)
            .collect();
        assert_eq!(got, want, "{v}");
        // The release the definitions name.
        let sd = &definitions(version_dir(v), "Bundle-resources.json")[0];
        assert_eq!(v.release(), sd["fhirVersion"].as_str().unwrap(), "{v}");
        // `schema --list` lists them.
        let o = bin(&["schema", "--list", "--fhir-version", v.name()]);
        assert!(o.status.success());
        assert_eq!(
            String::from_utf8(o.stdout).unwrap().lines().count(),
            want.len()
        );
    }
    // Published counts (the R4 specification's 145 resources plus Parameters... are checked
    // above against the definitions; here the sizes, for the docs).
    assert_eq!(defined_resources("r4").len(), 146);
    assert_eq!(defined_resources("r4b").len(), 141);
    assert_eq!(defined_resources("r5").len(), 158);
}

#[test]
fn the_schemas_follow_what_changed_between_versions() {
    // Encounter.class: one Coding in R4 and R4B, a list of CodeableConcepts in R5.
    for v in FhirVersion::ALL {
        let (codes, max) = element(version_dir(v), "Encounter.class");
        let dt = column_type(v, "Encounter", "class");
        let (item, list) = match &dt {
            DataType::List(f) => (f.data_type().clone(), true),
            other => (other.clone(), false),
        };
        assert_eq!(list, max == "*", "{v}: Encounter.class {dt:?}");
        let DataType::Struct(fields) = item else {
            panic!("{v}: {dt:?}")
        };
        let has = |n: &str| fields.iter().any(|f| f.name() == n);
        match codes[0].as_str() {
            "Coding" => assert!(has("system") && has("code") && !has("coding"), "{v}"),
            "CodeableConcept" => assert!(has("coding") && has("text"), "{v}"),
            other => panic!("{v}: Encounter.class is {other}"),
        }
    }
    // Attachment.size: unsignedInt in R4, integer64 in R5 (a JSON string, its text kept).
    for (v, want) in [
        (FhirVersion::R4, DataType::Int32),
        (FhirVersion::R5, DataType::Utf8),
    ] {
        let (codes, _) = element(version_dir(v), "Attachment.size");
        assert_eq!(
            codes[0],
            if v == FhirVersion::R5 {
                "integer64"
            } else {
                "unsignedInt"
            }
        );
        assert_eq!(column_type(v, "Patient", "photo.size"), want, "{v}");
    }
    // MedicationRequest.medication: a choice in R4, a CodeableReference in R5.
    let (codes, _) = element("r4", "MedicationRequest.medication[x]");
    assert_eq!(codes, ["CodeableConcept", "Reference"]);
    let r4 = arrow_schema(FhirVersion::R4, "MedicationRequest").unwrap();
    assert!(r4.field_with_name("medicationCodeableConcept").is_ok());
    assert!(r4.field_with_name("medication").is_err());
    let (codes, _) = element("r5", "MedicationRequest.medication");
    assert_eq!(codes, ["CodeableReference"]);
    assert!(column_type(
        FhirVersion::R5,
        "MedicationRequest",
        "medication.concept.coding"
    )
    .to_string()
    .contains("Struct"));
    assert!(matches!(
        column_type(FhirVersion::R5, "MedicationRequest", "medication.reference"),
        DataType::Struct(_)
    ));
    // Types removed and added: as the definitions say.
    let (r4, r5) = (defined_resources("r4"), defined_resources("r5"));
    assert!(r4.contains("MedicinalProduct") && !r5.contains("MedicinalProduct"));
    assert!(arrow_schema(FhirVersion::R5, "MedicinalProduct").is_none());
    assert!(!r4.contains("NutritionIntake") && r5.contains("NutritionIntake"));
    assert!(arrow_schema(FhirVersion::R5, "NutritionIntake").is_some());
    // Asked for in the wrong version, the schema command says which has it.
    let o = bin(&["schema", "NutritionIntake"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("--fhir-version r5"), "{err}");
}

/// Every R4B and R5 example converted as its version and written back: every resource equal,
/// numbers and strings as written; the run records and tables name the version.
#[test]
fn r4b_and_r5_examples_round_trip_losslessly() {
    use fhir2parquet::convert::Columns;
    for (v, total) in [(FhirVersion::R4b, 2840), (FhirVersion::R5, 2822)] {
        for columns in [Columns::All, Columns::Present] {
            let input = shared(&format!("fhir-data/{}-spec-examples", v.name()));
            let tmp = tempfile::tempdir().unwrap();
            let out = tmp.path().join("out");
            let mut opts = convert_opts(&out);
            opts.fhir_version = Some(v);
            opts.write.columns = columns;
            let record = fhir2parquet::convert::run(std::slice::from_ref(&input), &opts).unwrap();
            assert_eq!(record.fhir_version, v.release());
            assert_eq!(record.rejects.count, 0, "{v}");
            assert!(
                record.version_hint.is_none(),
                "{v}: {:?}",
                record.version_hint
            );
            fhir2parquet::encode::to_ndjson(&out, &tmp.path().join("back")).unwrap();
            assert_eq!(
                assert_same_resources(&input, &tmp.path().join("back")),
                total,
                "{v}"
            );
        }
    }
}

/// The rows of a view over a dataset, each cell as text ("" for null).
fn view_rows(out: &Path, view: Value) -> Vec<Vec<String>> {
    let session = fhir2parquet::session::Session::open(out, None).unwrap();
    let view = fhir2parquet::view::ViewDefinition::from_json(&view).unwrap();
    let batches = fhir2parquet::view::batches(&session, &view).unwrap();
    let mut rows = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            rows.push(
                b.columns()
                    .iter()
                    .map(|c| match c.is_null(r) {
                        true => String::new(),
                        false => arrow::util::display::array_value_to_string(c, r).unwrap(),
                    })
                    .collect(),
            );
        }
    }
    rows.sort();
    rows
}

/// The resources of one type among a version's examples.
fn examples(v: &str, ty: &str) -> Vec<Value> {
    read_lines(&shared(&format!(
        "fhir-data/{v}-spec-examples/{ty}.ndjson.gz"
    )))
    .iter()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Views over R5 data read it by R5's definitions (Encounter.class is a list of
/// CodeableConcepts there): the rows a walker over the NDJSON computes.
#[test]
fn views_over_r5_data_give_the_walkers_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut opts = convert_opts(&out);
    opts.fhir_version = Some(FhirVersion::R5);
    let inputs: Vec<_> = ["Patient", "Observation", "Encounter"]
        .iter()
        .map(|t| shared(&format!("fhir-data/r5-spec-examples/{t}.ndjson.gz")))
        .collect();
    fhir2parquet::convert::run(&inputs, &opts).unwrap();

    let got = view_rows(
        &out,
        serde_json::json!({"resource": "Patient", "select": [{"column": [
            {"name": "id", "path": "id"},
            {"name": "gender", "path": "gender"},
            {"name": "birth", "path": "birthDate"},
            {"name": "family", "path": "name.family.first()"}
        ]}]}),
    );
    let mut want: Vec<Vec<String>> = examples("r5", "Patient")
        .iter()
        .map(|p| {
            let family = p["name"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|n| n.get("family"))
                .map(text)
                .unwrap_or_default();
            vec![
                text(&p["id"]),
                text(&p["gender"]),
                text(&p["birthDate"]),
                family,
            ]
        })
        .collect();
    want.sort();
    assert_eq!(got, want);

    let got = view_rows(
        &out,
        serde_json::json!({"resource": "Observation", "select": [{"column": [
            {"name": "id", "path": "id"},
            {"name": "status", "path": "status"},
            {"name": "code", "path": "code.coding.code.first()"},
            {"name": "subject", "path": "subject.reference"},
            {"name": "unit", "path": "value.ofType(Quantity).unit"}
        ]}]}),
    );
    let mut want: Vec<Vec<String>> = examples("r5", "Observation")
        .iter()
        .map(|o| {
            vec![
                text(&o["id"]),
                text(&o["status"]),
                text(&o["code"]["coding"][0]["code"]),
                text(&o["subject"]["reference"]),
                text(&o["valueQuantity"]["unit"]),
            ]
        })
        .collect();
    want.sort();
    assert_eq!(got, want);

    // R5's Encounter.class: a list of CodeableConcepts, each code a row of a forEach.
    let got = view_rows(
        &out,
        serde_json::json!({"resource": "Encounter", "select": [
            {"column": [{"name": "id", "path": "id"}]},
            {"forEach": "class.coding", "column": [{"name": "code", "path": "code"}]}
        ]}),
    );
    let mut want: Vec<Vec<String>> = Vec::new();
    for e in examples("r5", "Encounter") {
        for c in e["class"].as_array().into_iter().flatten() {
            for coding in c["coding"].as_array().into_iter().flatten() {
                want.push(vec![text(&e["id"]), text(&coding["code"])]);
            }
        }
    }
    want.sort();
    assert!(!want.is_empty());
    assert_eq!(got, want);
    // The R4 spelling is refused against R5 data, with the path named.
    let session = fhir2parquet::session::Session::open(&out, None).unwrap();
    let r4_path = fhir2parquet::view::ViewDefinition::from_json(&serde_json::json!({
        "resource": "Encounter",
        "select": [{"column": [{"name": "c", "path": "class.code"}]}]
    }))
    .unwrap();
    let err = format!(
        "{:#}",
        fhir2parquet::view::batches(&session, &r4_path).unwrap_err()
    );
    assert!(err.contains("code"), "{err}");
    // A view that says it is for R4 only is refused on R5 data.
    let r4_only = fhir2parquet::view::ViewDefinition::from_json(&serde_json::json!({
        "resource": "Patient",
        "fhirVersion": ["4.0.1"],
        "select": [{"column": [{"name": "id", "path": "id"}]}]
    }))
    .unwrap();
    let err = format!(
        "{:#}",
        fhir2parquet::view::batches(&session, &r4_only).unwrap_err()
    );
    assert!(err.contains("4.0.1") && err.contains("5.0.0"), "{err}");
}

/// `sql` over R5 data: R5's tables and columns, and the FHIR functions by R5's definitions.
#[test]
fn sql_over_r5_data() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let input = shared("fhir-data/r5-spec-examples");
    crate::cloud::ok(&bin(&[
        "convert",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-q",
        "--fhir-version",
        "r5",
    ]));
    let count = |ty: &str| examples("r5", ty).len();
    let codes: usize = examples("r5", "Encounter")
        .iter()
        .map(|e| {
            e["class"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|c| c["coding"].as_array().cloned().unwrap_or_default())
                .count()
        })
        .sum();
    let o = bin(&[
        "sql",
        out.to_str().unwrap(),
        "--format",
        "csv",
        "-c",
        "SELECT (SELECT count(*) FROM NutritionIntake) AS n, \
         (SELECT count(*) FROM Encounter e, e.class c, c.coding d) AS codes, \
         (SELECT sum(array_length(fhirpath('class.coding.code', 'enc'))) FROM Encounter enc) AS by_path",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let row = stdout.lines().nth(1).unwrap();
    assert_eq!(
        row,
        format!("{},{codes},{codes}", count("NutritionIntake")),
        "{stdout}"
    );
}

/// A dataset holds one FHIR version: adding data of another (append, merge, replace) fails
/// with a message naming both and changes nothing; readers refuse a folder that mixes them.
#[test]
fn a_dataset_holds_one_fhir_version() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let r4 = shared("fhir-data/synthea-r4-small");
    crate::cloud::ok(&crate::convert_quiet(&r4, &out));
    let before = crate::files_under(&out);
    let snapshot = |files: &[std::path::PathBuf]| -> Vec<(std::path::PathBuf, Vec<u8>)> {
        files
            .iter()
            .map(|f| (f.clone(), std::fs::read(f).unwrap()))
            .collect()
    };
    let kept = snapshot(&before);
    let r5_patients = shared("fhir-data/r5-spec-examples/Patient.ndjson.gz");
    for mode in [&["--append"][..], &["--merge"], &[]] {
        let mut args = vec![
            "convert",
            r5_patients.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "-q",
            "--fhir-version",
            "r5",
        ];
        args.extend(mode);
        let o = bin(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{mode:?}: {err}");
        assert!(
            err.contains("r4 (4.0.1)") && err.contains("r5 (5.0.0)"),
            "{mode:?}: {err}"
        );
        assert_eq!(crate::files_under(&out), before, "{mode:?}");
        assert_eq!(snapshot(&before), kept, "{mode:?}");
    }
    // Without --fhir-version a run adds to the dataset as its version.
    let o = bin(&[
        "convert",
        r4.join("Patient.ndjson").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-q",
        "--append",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(crate::run_record(&out)["fhir_version"], "4.0.1");

    // A folder whose tables hold different versions (put together by hand): readers say so.
    let r5 = tmp.path().join("r5");
    crate::cloud::ok(&bin(&[
        "convert",
        shared("fhir-data/r5-spec-examples/Encounter.ndjson.gz")
            .to_str()
            .unwrap(),
        "-o",
        r5.to_str().unwrap(),
        "-q",
        "--fhir-version",
        "r5",
    ]));
    std::fs::remove_dir_all(out.join("Encounter")).unwrap();
    std::fs::rename(r5.join("Encounter"), out.join("Encounter")).unwrap();
    let o = bin(&[
        "sql",
        out.to_str().unwrap(),
        "-c",
        "SELECT count(*) FROM Patient",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("mixes FHIR versions") && err.contains("Encounter"),
        "{err}"
    );
}

/// `warehouse duckdb` over R5 data and `view --sql duckdb --fhir-version r5`, run in DuckDB:
/// every table's rows, R5's Encounter.class a list, and the view's rows those a walker over
/// the NDJSON computes.
#[test]
fn duckdb_runs_the_r5_warehouse_statements_and_compiled_views() {
    if !crate::python_has(
        "duckdb, duckdb_ext",
        "duckdb==1.4.4 duckdb-ext-delta==1.4.4.20260205",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let types = ["Encounter", "Patient", "NutritionIntake"];
    let mut args = vec!["convert".to_string()];
    for t in types {
        let p = shared(&format!("fhir-data/r5-spec-examples/{t}.ndjson.gz"));
        args.push(p.to_str().unwrap().to_string());
    }
    let more = ["-o", out.to_str().unwrap(), "-q", "--fhir-version", "r5"];
    args.extend(more.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    crate::cloud::ok(&bin(&args));
    let script = tmp.path().join("warehouse.sql");
    crate::cloud::ok(&bin(&[
        "warehouse",
        "duckdb",
        out.to_str().unwrap(),
        "-o",
        script.to_str().unwrap(),
    ]));
    let view = tmp.path().join("classes.json");
    std::fs::write(
        &view,
        serde_json::json!({"resource": "Encounter", "select": [
            {"column": [{"name": "id", "path": "id"}]},
            {"forEach": "class.coding", "column": [{"name": "code", "path": "code"}]}
        ]})
        .to_string(),
    )
    .unwrap();
    let o = bin(&[
        "view",
        view.to_str().unwrap(),
        "--sql",
        "duckdb",
        "--fhir-version",
        "r5",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let view_sql = tmp.path().join("view.sql");
    std::fs::write(&view_sql, &o.stdout).unwrap();
    // As R4 the same view does not compile: R4's Encounter.class is one Coding.
    let o = bin(&["view", view.to_str().unwrap(), "--sql", "duckdb"]);
    assert!(!o.status.success());

    let o = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/versions/duckdb_r5.py"
        ))
        .arg(&script)
        .arg(&view_sql)
        .env("DUCKDB_EXTENSION_DIRECTORY", crate::duckdb_extensions())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got: Value = serde_json::from_slice(&o.stdout).unwrap();
    for t in types {
        assert_eq!(got["counts"][t], examples("r5", t).len(), "{t}");
    }
    assert!(got["class_type"].as_str().unwrap().ends_with("[]"), "{got}");
    let mut want: Vec<Value> = Vec::new();
    for e in examples("r5", "Encounter") {
        for c in e["class"].as_array().into_iter().flatten() {
            for coding in c["coding"].as_array().into_iter().flatten() {
                want.push(serde_json::json!([e["id"], coding["code"]]));
            }
        }
    }
    assert!(!want.is_empty());
    want.sort_by_key(|v| v.to_string());
    let mut rows = got["rows"].as_array().unwrap().clone();
    rows.sort_by_key(|v| v.to_string());
    assert_eq!(rows, want);
}

/// Data converted as a version it is not: nothing lost, and the summary says which version it
/// looks like and how to ask for it; data of the version asked for gets no such note.
#[test]
fn the_summary_names_the_version_the_data_looks_like() {
    let tmp = tempfile::tempdir().unwrap();
    for (set, asked, looks) in [
        ("r5-spec-examples", "r4", Some("r5")),
        ("r4-spec-examples", "r5", Some("r4")),
        ("r4b-spec-examples", "r4", Some("r4b")),
        ("r5-spec-examples", "r5", None),
        ("synthea-r4-small", "r4", None),
    ] {
        let out = tmp.path().join(format!("{set}-{asked}"));
        let input = shared(&format!("fhir-data/{set}"));
        let o = bin(&[
            "convert",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--fhir-version",
            asked,
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        let record = crate::run_record(&out);
        match looks {
            Some(v) => {
                let hint = record["version_hint"].as_str().unwrap();
                assert!(
                    hint.contains(&format!("--fhir-version {v}")),
                    "{set}: {hint}"
                );
                assert!(
                    err.contains(&format!("note: the data looks like FHIR {v} ")),
                    "{err}"
                );
            }
            None => {
                assert!(record.get("version_hint").is_none(), "{set}: {record}");
                assert!(!err.contains("looks like"), "{err}");
            }
        }
        // Nothing lost either way.
        let back = tmp.path().join(format!("{set}-{asked}-back"));
        fhir2parquet::encode::to_ndjson(&out, &back).unwrap();
        let rejected = record["rejects"]["count"].as_u64().unwrap() as usize;
        let total: usize = crate::resources_per_type(&input).values().sum::<u64>() as usize;
        let mut kept = 0;
        let rejects = out.join("_rejects");
        if rejects.exists() {
            for f in crate::ndjson_files(&rejects) {
                kept += read_lines(&f).len();
            }
        }
        assert_eq!(kept, rejected, "{set}");
        assert_eq!(
            crate::resources_per_type(&back).values().sum::<u64>() as usize + rejected,
            total,
            "{set}"
        );
    }
}
