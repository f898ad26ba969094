//! Datasets as Delta Lake tables: independent readers, overwrite and append commits, history and
//! time travel, a run killed before its commit, vacuum. Expected values come from the NDJSON.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::cloud::ok;
use crate::{bin, ndjson_files, read_lines, resources_per_type as counts_in, shared};

fn convert(input: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "convert",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-q",
    ];
    args.extend_from_slice(extra);
    bin(&args)
}

/// `SELECT count(*)` of each type through `sql` (extra: `--as-of ...`).
fn sql_counts(out: &Path, types: &[&String], extra: &[&str]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for t in types {
        let q = format!("SELECT count(*) AS n FROM \"{t}\"");
        let mut args = vec!["sql", out.to_str().unwrap(), "--format", "csv", "-c", &q];
        args.extend_from_slice(extra);
        let text = ok(&bin(&args));
        let n: u64 = text.lines().nth(1).unwrap().trim().parse().unwrap();
        counts.insert(t.to_string(), n);
    }
    counts
}

fn log_versions(out: &Path, t: &str) -> usize {
    std::fs::read_dir(out.join(t).join("_delta_log"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count()
}

#[test]
fn each_type_is_a_delta_table_read_by_deltalake_and_duckdb() {
    if !crate::python_has(
        "deltalake, duckdb, duckdb_ext",
        "deltalake duckdb==1.4.4 duckdb-ext-delta==1.4.4.20260205",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // Two runs: the second (an append of another export) gives each table a second version
    // whose files hold other columns than the first's.
    let small = shared("fhir-data/synthea-r4-small");
    let ten = shared("fhir-data/synthea-r4-10-patients");
    ok(&convert(&small, &out, &[]));
    ok(&convert(&ten, &out, &["--append"]));
    let mut schemas = serde_json::Map::new();
    for t in counts_in(&small).keys().chain(counts_in(&ten).keys()) {
        let schema =
            fhir2parquet::schema::node::arrow_schema(fhir2parquet::schema::FhirVersion::R4, t)
                .unwrap();
        let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        schemas.insert(t.clone(), names.into());
    }
    let schemas_path = tmp.path().join("schemas.json");
    std::fs::write(
        &schemas_path,
        serde_json::Value::Object(schemas).to_string(),
    )
    .unwrap();
    let ext = crate::duckdb_extensions();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/delta_check.py");
    let mut args: Vec<String> = vec![
        script.into(),
        out.to_string_lossy().into(),
        schemas_path.to_string_lossy().into(),
    ];
    for f in ndjson_files(&small).into_iter().chain(ndjson_files(&ten)) {
        args.push(f.to_string_lossy().into());
    }
    let o = Command::new("python3")
        .args(&args)
        .env("DUCKDB_EXTENSION_DIRECTORY", ext)
        .output()
        .unwrap();
    let text = ok(&o);
    assert!(text.contains("passed"), "{text}");
}

#[test]
fn reconvert_overwrites_and_earlier_versions_stay_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let first = shared("fhir-data/synthea-r4-small");
    let second = shared("fhir-data/synthea-r4-10-patients");
    let (c1, c2) = (counts_in(&first), counts_in(&second));
    ok(&convert(&first, &out, &[]));
    ok(&convert(&second, &out, &[]));
    // Types in both inputs: the second run's rows only; the first's at version 0.
    let both: Vec<&String> = c2.keys().filter(|t| c1.contains_key(*t)).collect();
    assert!(both.len() >= 5, "{both:?}");
    let now = sql_counts(&out, &both, &[]);
    let then = sql_counts(&out, &both, &["--as-of", "0"]);
    for t in &both {
        assert_eq!(now[*t], c2[*t], "{t} now");
        assert_eq!(then[*t], c1[*t], "{t} at version 0");
        assert_eq!(log_versions(&out, t), 2, "{t}");
    }
    // The run record names the version each type reached.
    let record = crate::run_record(&out);
    assert_eq!(record["types"]["Patient"]["table_version"], 1);
    // history lists both commits of a table.
    let text = ok(&bin(&[
        "history",
        out.to_str().unwrap(),
        "Patient",
        "--json",
    ]));
    let commits: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(commits.len(), 2, "{text}");
    assert_eq!(commits[0]["version"], 1);
    assert_eq!(commits[0]["operation"], "WRITE");
    assert_eq!(commits[0]["mode"], "Overwrite");
    assert_eq!(commits[1]["version"], 0);
    // The version at a time: version 0's commit time reads version 0.
    let t0 = commits[1]["timestamp"].as_i64().unwrap();
    let at = chrono::DateTime::from_timestamp_millis(t0)
        .unwrap()
        .to_rfc3339();
    let then_by_time = sql_counts(&out, &both, &["--as-of", &at]);
    assert_eq!(then_by_time, then);
    // A version that is not there: an error that says how to find them.
    let o = bin(&[
        "sql",
        out.to_str().unwrap(),
        "--as-of",
        "7",
        "-c",
        "SELECT 1",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("history"));

    // vacuum: version 0's files go, the current version reads as before.
    let patient_files = |out: &Path| {
        crate::files_under(&out.join("Patient"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
            .count()
    };
    let before = patient_files(&out);
    ok(&bin(&["vacuum", out.to_str().unwrap(), "--retain", "0"]));
    assert!(patient_files(&out) < before);
    assert_eq!(sql_counts(&out, &both, &[]), now);
}

#[test]
fn append_commits_add_rows_and_views_read_the_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let src = shared("fhir-data/synthea-r4-small");
    let counts = counts_in(&src);
    ok(&convert(&src, &out, &[]));
    ok(&convert(&src, &out, &["--append"]));
    let types: Vec<&String> = counts.keys().collect();
    let got = sql_counts(&out, &types, &[]);
    for t in &types {
        assert_eq!(got[*t], 2 * counts[*t], "{t}");
    }
    let first = sql_counts(&out, &types, &["--as-of", "0"]);
    assert_eq!(first.values().sum::<u64>(), counts.values().sum::<u64>());
    // A view over the Delta tables.
    let view = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/views/patient_demographics.json"
    );
    let text = ok(&bin(&[
        "view",
        view,
        "--data",
        out.to_str().unwrap(),
        "--format",
        "csv",
        "--as-of",
        "0",
    ]));
    assert_eq!(text.lines().count() as u64 - 1, counts["Patient"]);
    // --format parquet cannot add to a Delta table.
    let o = convert(&src, &out, &["--append", "--format", "parquet"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("is a Delta table"));
}

#[test]
fn a_run_killed_before_its_commit_leaves_the_previous_version() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let first = shared("fhir-data/synthea-r4-small");
    let counts = counts_in(&first);
    ok(&convert(&first, &out, &[]));
    let files_before = crate::files_under(&out.join("Patient")).len();
    let o = Command::new(env!("CARGO_BIN_EXE_fhir2parquet"))
        .args([
            "convert",
            shared("fhir-data/synthea-r4-10-patients").to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "-q",
        ])
        .env("FHIR2PARQUET_FAILPOINT", "files-placed")
        .output()
        .unwrap();
    assert!(!o.status.success());
    // The dead run's files sit in the folders, and no reader sees them.
    assert!(crate::files_under(&out.join("Patient")).len() > files_before);
    let types: Vec<&String> = counts.keys().collect();
    assert_eq!(sql_counts(&out, &types, &[]), counts);
    for t in &types {
        assert_eq!(log_versions(&out, t), 1, "{t}");
    }
    // vacuum removes them (a killed run's files are older than no retention).
    ok(&bin(&["vacuum", out.to_str().unwrap(), "--retain", "0"]));
    assert_eq!(crate::files_under(&out.join("Patient")).len(), files_before);
    assert_eq!(sql_counts(&out, &types, &[]), counts);
    // The next run works as usual.
    ok(&convert(&first, &out, &[]));
    assert_eq!(sql_counts(&out, &types, &[]), counts);
}

/// A run killed after placing the files of a type that has no table yet, before that table's
/// version 0: the folder is no table (not a plain folder of those files either), readers say
/// so and go on, and the next run makes the table.
/// A convert run stopped at `failpoint`, adding `input` to `out`.
fn killed_at(failpoint: &str, input: &Path, out: &Path, args: &[&str]) {
    let o = Command::new(env!("CARGO_BIN_EXE_fhir2parquet"))
        .args([
            "convert",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
        .arg("-q")
        .args(args)
        .env("FHIR2PARQUET_FAILPOINT", failpoint)
        .output()
        .unwrap();
    assert!(!o.status.success());
}

/// After a table's folder held a killed run's files: the Parquet files in it are exactly those
/// its log names once `vacuum --retain 0` ran.
fn vacuumed_to_the_log(out: &Path, name: &str) {
    ok(&bin(&["vacuum", out.to_str().unwrap(), "--retain", "0"]));
    let named = crate::delta_current_files(&out.join(name));
    let parquet: Vec<_> = crate::files_under(&out.join(name))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    assert_eq!(parquet.len(), named.len(), "{parquet:?}");
}

/// A dataset of Synthea's patients, and the specification's CodeSystem examples to add to it
/// (with their line count): the folder, the dataset, the input, its lines.
fn patients_and_code_systems() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
    u64,
) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    ok(&convert(
        &shared("fhir-data/synthea-r4-small/Patient.ndjson"),
        &out,
        &[],
    ));
    let input = shared("fhir-data/r4-spec-examples/CodeSystem.ndjson.gz");
    let lines = crate::read_lines(&input).len() as u64;
    (tmp, out, input, lines)
}

#[test]
fn a_new_table_killed_before_it_is_moved_in_is_no_table() {
    // A type with no folder in OUT gets its table made whole, version 0 and all, in the run's
    // folder, then moved in: a run killed before then leaves OUT as it was.
    let (_tmp, out, input, lines) = patients_and_code_systems();
    killed_at("table-made", &input, &out, &["--append"]);
    assert!(!out.join("CodeSystem").exists());
    let sql = |q: &str| bin(&["sql", out.to_str().unwrap(), "-q", "-c", q]);
    let err = ok_stderr(&sql("SELECT count(*) AS n FROM Patient"));
    assert!(!err.contains("CodeSystem"), "{err}");
    assert!(!sql("SELECT count(*) AS n FROM CodeSystem").status.success());
    // The next run makes the table, of its own rows only.
    ok(&convert(&input, &out, &["--append"]));
    let got = sql_counts(&out, &[&"CodeSystem".to_string()], &[]);
    assert_eq!(got["CodeSystem"], lines);
    let log = out.join("CodeSystem/_delta_log/00000000000000000000.json");
    let first = std::fs::read_to_string(&log).unwrap();
    let info: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    let location = info["commitInfo"]["operationParameters"]["location"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        location.ends_with("/out/CodeSystem/") && !location.contains(".fhir2parquet-tmp"),
        "version 0 names where the table lives: {location}"
    );
    vacuumed_to_the_log(&out, "CodeSystem");
}

#[test]
fn a_folder_killed_before_its_first_commit_is_no_table() {
    // A plain Parquet folder made a Delta table: the run's files go into the folder, marked
    // until version 0 is committed. Killed between: readers leave the folder out, with a
    // warning, and neither the old nor the dead run's rows are read as a table.
    let (_tmp, out, input, lines) = patients_and_code_systems();
    ok(&convert(&input, &out, &["--format", "parquet"]));
    killed_at("files-placed", &input, &out, &[]);
    assert!(out.join("CodeSystem/_fhir2parquet-uncommitted").exists());
    assert!(!out.join("CodeSystem/_delta_log").exists());
    let sql = |q: &str| bin(&["sql", out.to_str().unwrap(), "-q", "-c", q]);
    let err = ok_stderr(&sql("SELECT count(*) AS n FROM Patient"));
    assert!(
        err.contains("CodeSystem") && err.contains("did not commit"),
        "{err}"
    );
    assert!(!sql("SELECT count(*) AS n FROM CodeSystem").status.success());
    // The next run makes the table, of its own rows only; vacuum removes the other files.
    ok(&convert(&input, &out, &[]));
    let got = sql_counts(&out, &[&"CodeSystem".to_string()], &[]);
    assert_eq!(got["CodeSystem"], lines);
    assert!(!out.join("CodeSystem/_fhir2parquet-uncommitted").exists());
    vacuumed_to_the_log(&out, "CodeSystem");
}

#[test]
fn partition_columns_are_the_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let src = shared("fhir-data/synthea-r4-small");
    ok(&convert(
        &src,
        &out,
        &["--partition-by", "Observation.effective:year"],
    ));
    // Rows per year from the NDJSON.
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for line in read_lines(&src.join("Observation.ndjson")) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let year = v["effectiveDateTime"]
            .as_str()
            .or(v["effectiveInstant"].as_str())
            .or(v["effectivePeriod"]["start"].as_str())
            .map(|s| s[..4].to_string())
            .unwrap_or_else(|| "NULL".into());
        *want.entry(year).or_default() += 1;
    }
    let text = ok(&bin(&[
        "sql",
        out.to_str().unwrap(),
        "--format",
        "csv",
        "-c",
        "SELECT coalesce(effective_year, 'NULL') AS y, count(*) AS n FROM Observation GROUP BY 1 ORDER BY 1",
    ]));
    let got: BTreeMap<String, u64> = text
        .lines()
        .skip(1)
        .map(|l| {
            let (y, n) = l.split_once(',').unwrap();
            (y.to_string(), n.parse().unwrap())
        })
        .collect();
    assert_eq!(got, want);
    let log = std::fs::read_to_string(out.join("Observation/_delta_log/00000000000000000000.json"))
        .unwrap();
    assert!(
        log.contains(r#""partitionColumns":["effective_year"]"#),
        "{log}"
    );
    assert!(log.contains("fhir2parquet.fhirVersion"));
    // The creation's commitInfo names the partition columns and properties, as Spark's does;
    // the schema is in the metaData action only (delta-rs's own commitInfo repeats it whole).
    let info: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    let parameters = &info["commitInfo"]["operationParameters"];
    assert_eq!(info["commitInfo"]["operation"], "CREATE TABLE", "{info}");
    assert_eq!(parameters["partitionBy"], r#"["effective_year"]"#, "{info}");
    assert!(parameters["properties"]
        .as_str()
        .unwrap()
        .contains("fhir2parquet.fhirVersion"));
    assert!(parameters.get("metadata").is_none(), "{info}");
    assert_eq!(log.matches("schemaString").count(), 1);
    assert!(info["commitInfo"]["timestamp"].as_i64().unwrap() > 0);
}

/// Four `convert --shard I/4 --append` at once into one dataset: every resource once. `bin`
/// runs the binary with its arguments (locally, or with a store's environment).
pub fn four_shards_at_once(
    out: &str,
    bin: &dyn Fn(&[&str]) -> std::process::Command,
    count: &dyn Fn(&str) -> u64,
) {
    let src = shared("fhir-data/synthea-r4-small");
    let want = counts_in(&src);
    let children: Vec<std::process::Child> = (1..=4)
        .map(|i| {
            let shard = format!("{i}/4");
            bin(&[
                "convert",
                src.to_str().unwrap(),
                "-o",
                out,
                "-q",
                "--append",
                "--shard",
                &shard,
                "-j",
                "1",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for c in children {
        ok(&c.wait_with_output().unwrap());
    }
    for (t, n) in &want {
        assert_eq!(count(t), *n, "{t}");
    }
}

#[test]
fn four_shards_convert_into_one_dataset_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let out_s = out.to_str().unwrap().to_string();
    let bin = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fhir2parquet"));
        c.args(args);
        c
    };
    let count = |t: &str| sql_counts(&out, &[&t.to_string()], &[])[t];
    four_shards_at_once(&out_s, &bin, &count);
    // Each shard took its own files: one commit per shard that had the type.
    let commits = log_versions(&out, "Patient");
    assert!((1..=4).contains(&commits), "{commits}");
    // A shard that does not exist is an error before anything is read.
    let o = crate::bin(&["convert", "x", "-o", &out_s, "--append", "--shard", "5/4"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("1 <= I <= N"));
}

/// Every Patient of the table, as `id -> family name` (through `sql`; extra: `--as-of ...`).
fn patients_by_id(out: &Path, extra: &[&str]) -> BTreeMap<String, String> {
    let q = "SELECT id, coalesce(name[1].family, '') AS family FROM Patient ORDER BY id";
    let mut args = vec!["sql", out.to_str().unwrap(), "--format", "csv", "-c", q];
    args.extend_from_slice(extra);
    ok(&bin(&args))
        .lines()
        .skip(1)
        .map(|l| {
            let (id, family) = l.split_once(',').unwrap();
            (id.to_string(), family.to_string())
        })
        .collect()
}

fn family(p: &serde_json::Value) -> String {
    p["name"][0]["family"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The merge rules, written out here from the issue's words, over JSON values: per id the
/// latest `meta.lastUpdated` wins (equal or missing: the later one); a deletion removes the id
/// unless the change set re-created it after the deletion's time.
fn expected_after_merge(
    table: &[serde_json::Value],
    changes: &[serde_json::Value],
    deletes: &[(String, Option<String>)],
) -> BTreeMap<String, String> {
    let lu = |p: &serde_json::Value| {
        p["meta"]["lastUpdated"]
            .as_str()
            .map(|s| chrono::DateTime::parse_from_rfc3339(s).unwrap())
    };
    let mut state: BTreeMap<String, (Option<chrono::DateTime<chrono::FixedOffset>>, String, bool)> =
        table
            .iter()
            .map(|p| {
                (
                    p["id"].as_str().unwrap().to_string(),
                    (lu(p), family(p), false),
                )
            })
            .collect();
    for p in changes {
        let id = p["id"].as_str().unwrap().to_string();
        let new = lu(p);
        let wins = match (state.get(&id), new) {
            (Some((Some(old), _, _)), Some(n)) => n >= *old,
            _ => true,
        };
        if wins {
            state.insert(id, (new, family(p), true));
        }
    }
    for (id, when) in deletes {
        let when = when
            .as_deref()
            .map(|w| chrono::DateTime::parse_from_rfc3339(w).unwrap());
        let Some((lu, _, from_changes)) = state.get(id) else {
            continue;
        };
        let recreated = *from_changes
            && match (lu, when) {
                (Some(l), Some(w)) => *l > w,
                _ => true,
            };
        if !recreated {
            state.remove(id);
        }
    }
    state.into_iter().map(|(id, (_, f, _))| (id, f)).collect()
}

#[test]
fn a_merge_applies_updates_deletes_and_new_resources_by_last_updated() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // The initial load: the shared Patients, each last updated at the start of 2021.
    let stamp = |mut p: serde_json::Value, when: &str, family: Option<&str>| {
        p["meta"] = serde_json::json!({"lastUpdated": when});
        if let Some(f) = family {
            p["name"][0]["family"] = f.into();
        }
        p
    };
    let shared_patients: Vec<serde_json::Value> =
        read_lines(&shared("fhir-data/synthea-r4-small/Patient.ndjson"))
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    assert!(shared_patients.len() >= 9);
    let initial: Vec<serde_json::Value> = shared_patients
        .iter()
        .map(|p| stamp(p.clone(), "2021-01-01T00:00:00Z", None))
        .collect();
    let write = |path: &Path, rows: &[serde_json::Value]| {
        let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
        std::fs::write(path, text).unwrap();
    };
    let first = tmp.path().join("initial.ndjson");
    write(&first, &initial);
    ok(&convert(&first, &out, &[]));
    let id = |i: usize| initial[i]["id"].as_str().unwrap().to_string();
    let new_patient = |n: &str, when: &str, family: &str| {
        let mut p = stamp(shared_patients[0].clone(), when, Some(family));
        p["id"] = n.into();
        p
    };

    // The change set, as a `_since` export: a manifest, its output and its deleted file.
    let export = tmp.path().join("changes");
    std::fs::create_dir(&export).unwrap();
    let changes = vec![
        // Updates: newer, and equal times (the change set wins).
        stamp(initial[0].clone(), "2022-01-01T00:00:00Z", Some("Updated0")),
        stamp(
            initial[1].clone(),
            "2021-01-01T00:00:00Z",
            Some("SameTime1"),
        ),
        // Stale copies: older than the table's, they lose.
        stamp(initial[2].clone(), "2020-01-01T00:00:00Z", Some("Stale2")),
        // New resources, one of them twice (the later version wins), one twice at one time
        // (the later line wins).
        new_patient("new-a", "2022-01-01T00:00:00Z", "NewA1"),
        new_patient("new-b", "2022-03-01T00:00:00Z", "NewB2"),
        new_patient("new-a", "2022-02-01T00:00:00Z", "NewA2"),
        new_patient("new-b", "2022-01-01T00:00:00Z", "NewB1"),
        new_patient("new-c", "2022-01-01T00:00:00Z", "NewC1"),
        new_patient("new-c", "2022-01-01T00:00:00Z", "NewC2"),
        // Deleted and re-created after the deletion: stays, with its new values.
        stamp(
            initial[3].clone(),
            "2022-06-01T00:00:00Z",
            Some("Recreated3"),
        ),
        // Deleted after this version: goes.
        stamp(
            initial[4].clone(),
            "2022-01-01T00:00:00Z",
            Some("DeletedLater4"),
        ),
    ];
    write(&export.join("Patient.ndjson"), &changes);
    let deletes: Vec<(String, Option<String>)> = vec![
        (id(3), Some("2022-03-01T00:00:00Z".into())),
        (id(4), Some("2022-03-01T00:00:00Z".into())),
        (id(5), None),
        ("no-such-patient".into(), None),
    ];
    let entries = deletes
        .iter()
        .map(|(id, when)| {
            let mut e = serde_json::json!({"request": {"method": "DELETE", "url": format!("Patient/{id}")}});
            if let Some(w) = when {
                e["response"] = serde_json::json!({"status": "204", "lastModified": w});
            }
            e
        })
        .collect();
    crate::write_since_export(&export, "2022-07-01T00:00:00Z", entries);

    let before = patients_by_id(&out, &[]);
    let patient_files = crate::files_under(&out.join("Patient")).len();
    let o = convert(&export, &out, &["--merge"]);
    ok(&o);
    let want = expected_after_merge(&initial, &changes, &deletes);
    assert_eq!(patients_by_id(&out, &[]), want);
    assert_eq!(want["new-a"], "NewA2");
    assert_eq!(want["new-b"], "NewB2");
    assert_eq!(want["new-c"], "NewC2");
    assert!(!want.contains_key(&id(4)) && !want.contains_key(&id(5)));
    // Version 0 is still the initial load.
    assert_eq!(patients_by_id(&out, &["--as-of", "0"]), before);
    // The record counts what the merge did.
    let record = crate::run_record(&out);
    let m = &record["types"]["Patient"]["merge"];
    assert_eq!(m["inserted"], 3, "{m}");
    assert_eq!(m["updated"], 3, "{m}"); // 0, 1, 3
    assert_eq!(m["deleted"], 2, "{m}"); // 4, 5
    assert_eq!(m["superseded"], 4, "{m}"); // 2 (stale), new-a, new-b, new-c (earlier lines)
    assert_eq!(m["deletes_of_unknown_ids"], 1, "{m}");
    assert_eq!(
        m["unchanged"].as_u64().unwrap() as usize,
        initial.len() - 5,
        "{m}"
    );
    // No table file was rewritten: the replaced and deleted rows are marked in a deletion
    // vector. New are the run's own file and one vector file.
    let after = crate::files_under(&out.join("Patient"));
    assert_eq!(after.len(), patient_files + 2);
    let vectors = |files: &[std::path::PathBuf]| {
        files
            .iter()
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n.starts_with("deletion_vector_") && n.ends_with(".bin")
            })
            .count()
    };
    assert_eq!(vectors(&after), 1);
    let log =
        std::fs::read_to_string(out.join("Patient/_delta_log/00000000000000000001.json")).unwrap();
    assert!(
        log.contains("\"readerFeatures\":[\"deletionVectors\"]"),
        "{log}"
    );
    // The protocol is all the feature needs: the table's metadata (its whole schema) is not
    // recorded again.
    assert!(!log.contains("\"metaData\""), "{log}");
    // Delta readers that are not ours read the merged table alike.
    for (reader, got) in other_readers(&out, false) {
        assert_eq!(got, want, "{reader}");
    }
    let text = ok(&bin(&[
        "history",
        out.to_str().unwrap(),
        "Patient",
        "--json",
    ]));
    assert!(text.lines().next().unwrap().contains("\"MERGE\""), "{text}");

    // A deleted file that is not Bundles of DELETE requests: an error naming its line, nothing
    // applied.
    std::fs::write(
        export.join("deleted.ndjson"),
        "{\"resourceType\":\"Patient\",\"id\":\"x\"}\n",
    )
    .unwrap();
    let o = convert(&export, &out, &["--merge"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("deleted.ndjson, line 1"), "{err}");
    assert_eq!(patients_by_id(&out, &[]), want);

    // A second change set deletes and updates rows of the file that already has a vector:
    // the rows deleted before stay deleted.
    let second = tmp.path().join("second");
    std::fs::create_dir(&second).unwrap();
    let updated7 = stamp(initial[7].clone(), "2023-01-01T00:00:00Z", Some("Second7"));
    write(
        &second.join("Patient.ndjson"),
        std::slice::from_ref(&updated7),
    );
    let delete6 =
        serde_json::json!({"request": {"method": "DELETE", "url": format!("Patient/{}", id(6))}});
    crate::write_since_export(&second, "2023-02-01T00:00:00Z", vec![delete6]);
    ok(&convert(&second, &out, &["--merge"]));
    let mut want2 = want.clone();
    want2.remove(&id(6));
    want2.insert(id(7), "Second7".into());
    assert_eq!(patients_by_id(&out, &[]), want2);
    assert_eq!(patients_by_id(&out, &["--as-of", "1"]), want);
    for (reader, got) in other_readers(&out, false) {
        assert_eq!(got, want2, "{reader}");
    }
    // to-ndjson leaves the deleted rows out too.
    let back = tmp.path().join("back");
    ok(&bin(&[
        "to-ndjson",
        out.to_str().unwrap(),
        "-o",
        back.to_str().unwrap(),
    ]));
    let lines = read_lines(&back.join("Patient.ndjson"));
    let got: BTreeMap<String, String> = lines
        .iter()
        .map(|l| {
            let p: serde_json::Value = serde_json::from_str(l).unwrap();
            (p["id"].as_str().unwrap().to_string(), family(&p))
        })
        .collect();
    assert_eq!((lines.len(), got), (want2.len(), want2.clone()));

    // `warehouse` names the tables with deletion vectors: engines that read them as Delta apply
    // them or refuse the table; statements that load the files themselves would load the
    // deleted rows, and it says what to do first.
    let text = ok(&bin(&["warehouse", "athena", out.to_str().unwrap()]));
    assert!(text.contains("Patient hold deletion vectors"), "{text}");
    let load = ["warehouse", "bigquery", out.to_str().unwrap(), "--load"];
    let text = ok(&bin(&load));
    assert!(text.contains("Patient hold rows a merge deleted"), "{text}");
    assert!(text.contains("vacuum DATASET --purge"), "{text}");

    // vacuum --purge --retain 0: the files with deleted rows rewritten without them, the old
    // files and the vectors removed; the folder's Parquet files are the table.
    let o = bin(&["vacuum", out.to_str().unwrap(), "--purge", "--retain", "0"]);
    let err = ok_stderr(&o);
    assert!(
        err.contains("Patient: rewrote 1 file(s) without 7 deleted row(s)"),
        "{err}"
    );
    let purged = crate::files_under(&out.join("Patient"));
    assert_eq!(vectors(&purged), 0, "{purged:?}");
    assert_eq!(patients_by_id(&out, &[]), want2);
    let text = ok(&bin(&[
        "history",
        out.to_str().unwrap(),
        "Patient",
        "--json",
    ]));
    assert!(
        text.lines().next().unwrap().contains("\"OPTIMIZE\""),
        "{text}"
    );
    for (reader, got) in other_readers(&out, true) {
        assert_eq!(got, want2, "{reader}");
    }
    let text = ok(&bin(&load));
    assert!(!text.contains("hold rows a merge deleted"), "{text}");
}

/// The Patient table as readers that are not ours read it: delta-rs's (`deltalake`) and DuckDB's
/// delta extension, and with `plain` DuckDB over the folder's Parquet files as plain Parquet
/// (`parquet`, checked to hold each id once). Empty where they are not installed.
fn other_readers(out: &Path, plain: bool) -> Vec<(String, BTreeMap<String, String>)> {
    if !crate::python_has(
        "deltalake, duckdb, duckdb_ext",
        "deltalake duckdb==1.4.4 duckdb-ext-delta==1.4.4.20260205",
    ) {
        return Vec::new();
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/delta_rows.py");
    let folder = out.join("Patient");
    let mut args = vec![script, folder.to_str().unwrap()];
    if plain {
        args.push("plain");
    }
    let o = Command::new("python3")
        .args(&args)
        .env("DUCKDB_EXTENSION_DIRECTORY", crate::duckdb_extensions())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    let mut readers = Vec::new();
    for (reader, rows) in v.as_object().unwrap() {
        let Some(rows) = rows.as_object() else {
            continue;
        };
        let rows: BTreeMap<String, String> = rows
            .iter()
            .map(|(id, f)| (id.clone(), f.as_str().unwrap().to_string()))
            .collect();
        if reader == "parquet" {
            assert_eq!(v["parquet_rows"].as_u64().unwrap() as usize, rows.len());
        }
        readers.push((reader.clone(), rows));
    }
    assert_eq!(readers.len(), if plain { 3 } else { 2 });
    readers
}

fn ok_stderr(o: &std::process::Output) -> String {
    ok(o);
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_merge_resolves_duplicates_and_refuses_what_is_no_delta_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    // The shared Synthea set holds Practitioners twice: a merge into an empty folder keeps each
    // id once (a plain convert keeps both).
    let src = shared("fhir-data/synthea-r4-small/Practitioner.ndjson");
    let lines = read_lines(&src);
    let mut ids = crate::ids(&lines);
    ids.sort();
    ids.dedup();
    assert!(ids.len() < lines.len(), "the shared set has duplicate ids");
    let out = tmp.path().join("out");
    ok(&convert(&src, &out, &["--merge"]));
    let text = ok(&bin(&[
        "sql",
        out.to_str().unwrap(),
        "--format",
        "csv",
        "-c",
        "SELECT count(*) AS n, count(DISTINCT id) AS d FROM Practitioner",
    ]));
    assert_eq!(
        text.lines().nth(1).unwrap(),
        format!("{},{}", ids.len(), ids.len())
    );
    // Into plain Parquet folders, or a folder that is no dataset: errors that say what to do.
    let plain = tmp.path().join("plain");
    ok(&convert(&src, &plain, &["--format", "parquet"]));
    let o = convert(&src, &plain, &["--merge"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("plain Parquet folder"));
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    let o = convert(&src, &other, &["--merge"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not a dataset"));
}
