use std::sync::OnceLock;

use fhir2parquet::cli::PrintFormat;
use fhir2parquet::sql::Shell;

use crate::{bin_stdin, convert_opts, shared};

/// The small Synthea set, converted once for the SQL tests.
pub fn dataset() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let mut opts = convert_opts(tmp.path());
        opts.partition_by =
            vec![
                fhir2parquet::convert::PartitionSpec::parse("Observation.effective:year").unwrap(),
            ];
        fhir2parquet::convert::run(&[shared("fhir-data/synthea-r4-small")], &opts).unwrap();
        tmp
    })
    .path()
}

/// The result of a query as CSV rows (header first).
pub fn query(sql: &str) -> Vec<Vec<String>> {
    let shell = Shell::open(dataset(), None).unwrap();
    let batches = shell.run_sql(sql).unwrap();
    let mut out = Vec::new();
    fhir2parquet::sql::print_batches(&batches, PrintFormat::Csv, &mut out).unwrap();
    let mut r = csv_rows(&String::from_utf8(out).unwrap());
    if r.is_empty() {
        r.push(Vec::new());
    }
    r
}

fn csv_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

#[test]
fn reference_functions() {
    let rows = query(
        "SELECT reference_type(r) t, reference_id(r) i FROM (VALUES ('Patient/1'), ('https://x/fhir/Patient/2/_history/3'), \
         ('urn:uuid:abc'), ('#c1'), ('Patient?identifier=a|b')) AS v(r)",
    );
    assert_eq!(
        rows[1..],
        [
            ["Patient", "1"],
            ["Patient", "2"],
            ["", "abc"],
            ["", "c1"],
            ["Patient", ""]
        ]
        .map(|r| r.map(String::from).to_vec())
    );
    // On a Reference struct, and as a join key.
    let rows = query(
        "SELECT COUNT(*) FROM Observation o JOIN Patient p ON reference_id(o.subject) = p.id",
    );
    assert_eq!(rows[1][0], "1502");
    let rows = query("SELECT DISTINCT reference_type(subject) FROM Observation");
    assert_eq!(rows[1][0], "Patient");
}

#[test]
fn code_extension_and_date_functions() {
    let rows = query(
        "SELECT COUNT(*) FROM Observation WHERE has_code(code, 'http://loinc.org', '8302-2')",
    );
    assert_eq!(rows[1][0], "83");
    let rows = query("SELECT code_of(code, 'http://loinc.org') FROM Observation WHERE has_code(code, NULL, '8302-2') LIMIT 1");
    assert_eq!(rows[1][0], "8302-2");
    let rows = query(
        "SELECT extension_value(extension, 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex') b, COUNT(*) \
         FROM Patient GROUP BY 1 ORDER BY 1",
    );
    assert_eq!(
        rows[1..],
        [
            vec!["F".to_string(), "4".into()],
            vec!["M".into(), "5".into()]
        ]
    );
    let rows = query(
        "SELECT fhir_date_start('2020') s, fhir_date_end('2020') e, fhir_date_end('2020-02') m, fhir_date_start('2020-05-01T10:00:00+02:00') t",
    );
    assert_eq!(
        rows[1],
        [
            "2020-01-01T00:00:00Z",
            "2021-01-01T00:00:00Z",
            "2020-03-01T00:00:00Z",
            "2020-05-01T08:00:00Z"
        ]
    );
}

#[test]
fn camel_case_struct_access_unnest_partitions_and_decimals() {
    let rows = query("SELECT COUNT(*) FROM Observation WHERE valueQuantity.value > 100 AND effective_year = '2019'");
    assert!(rows[1][0].parse::<u64>().unwrap() > 0);
    let rows = query("SELECT c.code FROM (SELECT unnest(code.coding) AS c FROM Observation) WHERE c.code = '8302-2' LIMIT 1");
    assert_eq!(rows[1][0], "8302-2");
    let rows = query("SELECT SUM(valueQuantity.value) > 0, MIN(issued) < TIMESTAMP '2100-01-01T00:00:00Z' FROM Observation");
    assert_eq!(rows[1], ["true", "true"]);
}

#[test]
fn errors_name_the_nearest_name() {
    let shell = Shell::open(dataset(), None).unwrap();
    let e = shell
        .run_sql("SELECT * FROM Patien")
        .unwrap_err()
        .to_string();
    assert!(e.contains("did you mean Patient?"), "{e}");
    let e = shell
        .run_sql("SELECT gendr FROM Patient")
        .unwrap_err()
        .to_string();
    assert!(
        e.to_lowercase().contains("did you mean") && e.contains("gender"),
        "{e}"
    );
}

#[test]
fn copy_to_parquet_and_memory_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("g.parquet");
    let shell = Shell::open(dataset(), Some("256M")).unwrap();
    shell
        .run_sql(&format!(
            "COPY (SELECT gender, COUNT(*) n FROM Patient GROUP BY gender) TO '{}'",
            target.display()
        ))
        .unwrap();
    assert!(target.exists());
    let rows = shell
        .run_sql("SELECT o.id FROM Observation o JOIN Observation p ON o.id = p.id ORDER BY o.id")
        .unwrap();
    assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 1502);
}

#[test]
fn meta_commands_formats_and_scripts_through_stdin() {
    let ds = dataset().to_str().unwrap();
    let script = "\\dt\n\\d Patient\n\\timing\nSELECT gender,\n COUNT(*) AS n FROM Patient\n GROUP BY gender ORDER BY gender;\n\\q\nSELECT 1;\n";
    let o = bin_stdin(&["sql", ds, "--format", "csv"], script.as_bytes());
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("Observation,1502"),
        "\\dt lists tables with row counts: {out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("birthDate_ts,") && l.contains("UTC")),
        "\\d shows types: {out}"
    );
    assert!(out.contains("female,4\nmale,5"), "{out}");
    assert!(err.contains("row(s) in"), "\\timing: {err}");
    assert!(!out.contains("Int64(1)"), "\\q stops the script");
    let o = crate::bin(&[
        "sql",
        ds,
        "--format",
        "ndjson",
        "-c",
        "SELECT id, gender FROM Patient ORDER BY id LIMIT 1",
    ]);
    let line = String::from_utf8_lossy(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert!(v["gender"].is_string());
    let o = crate::bin(&[
        "sql",
        ds,
        "--format",
        "json",
        "-c",
        "SELECT COUNT(*) AS n FROM Patient",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["n"], 9);
}

#[test]
fn interactive_shell_in_a_pseudo_terminal() {
    // `script` gives the shell a terminal, so rustyline's line editor and history are used.
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no `script` to make a pseudo-terminal");
        return;
    }
    let ds = dataset().to_str().unwrap();
    let home = tempfile::tempdir().unwrap();
    let cmd = format!("{} sql {ds}", env!("CARGO_BIN_EXE_fhir2parquet"));
    let o = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("HOME", home.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            // Type like a person: the line editor discards what is typed before it starts.
            let mut stdin = c.stdin.take().unwrap();
            for line in ["SELECT COUNT(*)\n", " AS n FROM Patient;\n", "\\q\n"] {
                std::thread::sleep(std::time::Duration::from_millis(2500));
                stdin.write_all(line.as_bytes())?;
                stdin.flush()?;
            }
            c.wait_with_output()
        })
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("fhir> ") && out.contains("| 9 |"), "{out}");
    let history = std::fs::read_to_string(home.path().join(".fhir2parquet_history")).unwrap();
    assert!(history.contains("FROM Patient"), "{history}");
}
