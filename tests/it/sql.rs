use std::sync::OnceLock;

use fhir2parquet::output::PrintFormat;
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
    fhir2parquet::output::print_batches(&batches, PrintFormat::Csv, &mut out).unwrap();
    let mut r = csv_rows(&String::from_utf8(out).unwrap());
    if r.is_empty() {
        r.push(Vec::new());
    }
    r
}

/// The error a query fails with.
pub fn query_error(sql: &str) -> String {
    let shell = Shell::open(dataset(), None).unwrap();
    shell.run_sql(sql).unwrap_err().to_string()
}

/// The small set's resources of one type, parsed from the NDJSON.
pub fn ndjson(t: &str) -> Vec<serde_json::Value> {
    crate::read_lines(&shared(&format!("fhir-data/synthea-r4-small/{t}.ndjson")))
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// How many resources of a type the small set holds, from its NDJSON.
fn count(t: &str) -> usize {
    ndjson(t).len()
}

/// The id a reference points to (`Patient/1`, `urn:uuid:1`: `1`).
fn referenced_id(r: &serde_json::Value) -> String {
    let r = r["reference"].as_str().unwrap_or_default();
    r.rsplit(['/', ':']).next().unwrap_or_default().to_string()
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
    let patients: std::collections::HashSet<String> = ndjson("Patient")
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    let joined = ndjson("Observation")
        .iter()
        .filter(|o| patients.contains(&referenced_id(&o["subject"])))
        .count();
    assert!(joined > 0);
    assert_eq!(rows[1][0], joined.to_string());
    let rows = query("SELECT DISTINCT reference_type(subject) FROM Observation");
    assert_eq!(rows[1][0], "Patient");
}

#[test]
fn code_extension_and_date_functions() {
    let rows = query(
        "SELECT COUNT(*) FROM Observation WHERE has_code(code, 'http://loinc.org', '8302-2')",
    );
    let heights = ndjson("Observation")
        .iter()
        .filter(|o| {
            list(&o["code"]["coding"])
                .iter()
                .any(|c| c["system"] == "http://loinc.org" && c["code"] == "8302-2")
        })
        .count();
    assert!(heights > 0);
    assert_eq!(rows[1][0], heights.to_string());
    let rows = query("SELECT code_of(code, 'http://loinc.org') FROM Observation WHERE has_code(code, NULL, '8302-2') LIMIT 1");
    assert_eq!(rows[1][0], "8302-2");
    let rows = query(
        "SELECT extension_value(extension, 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex') b, COUNT(*) \
         FROM Patient GROUP BY 1 ORDER BY 1",
    );
    let mut sexes: std::collections::BTreeMap<String, usize> = Default::default();
    for p in ndjson("Patient") {
        for e in list(&p["extension"]) {
            if e["url"] == "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex" {
                *sexes
                    .entry(e["valueCode"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
        }
    }
    let want: Vec<Vec<String>> = sexes
        .iter()
        .map(|(k, n)| vec![k.clone(), n.to_string()])
        .collect();
    assert!(want.len() == 2);
    assert_eq!(rows[1..], want);
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
    let want = ndjson("Observation")
        .iter()
        .filter(|o| {
            o["valueQuantity"]["value"]
                .as_f64()
                .is_some_and(|v| v > 100.0)
                && o["effectiveDateTime"]
                    .as_str()
                    .or(o["effectivePeriod"]["start"].as_str())
                    .is_some_and(|d| d.starts_with("2019"))
        })
        .count();
    assert!(want > 0);
    assert_eq!(rows[1][0], want.to_string());
    let rows = query("SELECT c.code FROM (SELECT unnest(code.coding) AS c FROM Observation) WHERE c.code = '8302-2' LIMIT 1");
    assert_eq!(rows[1][0], "8302-2");
    let rows = query("SELECT SUM(valueQuantity.value) > 0, MIN(issued) < TIMESTAMP '2100-01-01T00:00:00Z' FROM Observation");
    assert_eq!(rows[1], ["true", "true"]);
}

#[test]
fn errors_name_the_nearest_name() {
    let e = query_error("SELECT * FROM Patien");
    assert!(e.contains("did you mean Patient?"), "{e}");
    let e = query_error("SELECT gendr FROM Patient");
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
    assert_eq!(
        rows.iter().map(|b| b.num_rows()).sum::<usize>(),
        count("Observation")
    );
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
        out.contains(&format!("Observation,{}", count("Observation"))),
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
    assert_eq!(v[0]["n"], count("Patient"));
}

#[test]
fn interactive_shell_in_a_pseudo_terminal() {
    // `script` gives the shell a terminal, so rustyline's line editor and history are used.
    let found = std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_ok();
    if !crate::present(found, "`script` (util-linux) to make a pseudo-terminal") {
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
    let n = format!("| {} |", count("Patient"));
    assert!(out.contains("fhir> ") && out.contains(&n), "{out}");
    let history = std::fs::read_to_string(home.path().join(".fhir2parquet_history")).unwrap();
    assert!(history.contains("FROM Patient"), "{history}");
}

fn list(v: &serde_json::Value) -> Vec<serde_json::Value> {
    v.as_array().cloned().unwrap_or_default()
}

fn sorted(mut rows: Vec<Vec<String>>) -> Vec<Vec<String>> {
    rows.sort();
    rows
}

#[test]
fn field_access_after_an_index_in_every_clause() {
    let obs = ndjson("Observation");
    let mut expected: std::collections::BTreeMap<String, u64> = Default::default();
    for o in &obs {
        *expected
            .entry(o["code"]["coding"][0]["code"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let want: Vec<Vec<String>> = expected
        .iter()
        .map(|(k, v)| vec![k.clone(), v.to_string()])
        .collect();
    // SELECT, GROUP BY and ORDER BY, with and without a table alias, in BigQuery's spellings too.
    for sql in [
        "SELECT code.coding[1].code AS c, COUNT(*) FROM Observation GROUP BY code.coding[1].code ORDER BY code.coding[1].code",
        "SELECT o.code.coding[1].code AS c, COUNT(*) FROM Observation o GROUP BY 1 ORDER BY 1",
        "SELECT code.coding[OFFSET(0)].code AS c, COUNT(*) FROM `Observation` GROUP BY 1 ORDER BY 1",
        "SELECT code.coding[ORDINAL(1)].code AS c, COUNT(*) FROM Observation GROUP BY 1 ORDER BY 1",
        "SELECT (code.coding[1]).code AS c, COUNT(*) FROM Observation GROUP BY 1 ORDER BY 1",
    ] {
        assert_eq!(query(sql)[1..], want, "{sql}");
    }
    // WHERE.
    let glucose = obs
        .iter()
        .filter(|o| o["code"]["coding"][0]["code"] == "2339-0")
        .count();
    let rows = query("SELECT COUNT(*) FROM Observation WHERE code.coding[1].code = '2339-0'");
    assert_eq!(rows[1][0], glucose.to_string());
    // Out of range: NULL, as BigQuery's SAFE_OFFSET gives.
    let rows = query(
        "SELECT COUNT(*) FROM Observation WHERE code.coding[SAFE_OFFSET(7)].code IS NULL AND code.coding[SAFE_ORDINAL(8)] IS NULL",
    );
    assert_eq!(rows[1][0], obs.len().to_string());
}

#[test]
fn unnest_in_from_one_row_per_element() {
    let obs = ndjson("Observation");
    // One row per coding, with the observation's id.
    let mut want = Vec::new();
    for o in &obs {
        for c in list(&o["code"]["coding"]) {
            want.push(vec![
                o["id"].as_str().unwrap().to_string(),
                c["code"].as_str().unwrap().to_string(),
            ]);
        }
    }
    for sql in [
        "SELECT o.id, c.code FROM Observation AS o, UNNEST(o.code.coding) AS c",
        "SELECT o.id, c.code FROM Observation o CROSS JOIN UNNEST(o.code.coding) AS c",
        "SELECT o.id, c.code FROM Observation o JOIN UNNEST(o.code.coding) AS c ON TRUE",
        "SELECT Observation.id, c.code FROM Observation, UNNEST(Observation.code.coding) c",
    ] {
        assert_eq!(
            sorted(query(sql)[1..].to_vec()),
            sorted(want.clone()),
            "{sql}"
        );
    }
    // Nested: one row per coding of each component.
    let mut want = Vec::new();
    for o in &obs {
        for comp in list(&o["component"]) {
            for c in list(&comp["code"]["coding"]) {
                want.push(vec![
                    o["id"].as_str().unwrap().to_string(),
                    c["code"].as_str().unwrap().to_string(),
                ]);
            }
        }
    }
    assert!(!want.is_empty());
    let rows = query(
        "SELECT o.id, cc.code FROM Observation o, UNNEST(o.component) AS comp, UNNEST(comp.code.coding) AS cc",
    );
    assert_eq!(sorted(rows[1..].to_vec()), sorted(want));
    // LEFT JOIN keeps observations without components, with NULL.
    let with: usize = obs.iter().map(|o| list(&o["component"]).len()).sum();
    let without = obs
        .iter()
        .filter(|o| list(&o["component"]).is_empty())
        .count();
    let rows = query(
        "SELECT COUNT(*), COUNT(comp.code) FROM Observation o LEFT JOIN UNNEST(o.component) AS comp ON TRUE",
    );
    assert_eq!(rows[1], [(with + without).to_string(), with.to_string()]);
    // WITH OFFSET gives the 0-based position, WITH ORDINALITY the 1-based one.
    let mut want = Vec::new();
    for o in &obs {
        for (i, c) in list(&o["code"]["coding"]).iter().enumerate() {
            want.push(vec![
                format!("{}|{}", o["id"].as_str().unwrap(), i),
                c["code"].as_str().unwrap().to_string(),
            ]);
        }
    }
    let rows = query(
        "SELECT o.id || '|' || CAST(n AS VARCHAR), c.code FROM Observation o, UNNEST(o.code.coding) AS c WITH OFFSET AS n",
    );
    assert_eq!(sorted(rows[1..].to_vec()), sorted(want.clone()));
    let rows = query(
        "SELECT o.id || '|' || CAST(ordinality - 1 AS VARCHAR), c.code FROM Observation o, UNNEST(o.code.coding) WITH ORDINALITY AS c",
    );
    assert_eq!(sorted(rows[1..].to_vec()), sorted(want));
}

#[test]
fn bigquery_functions_and_unsupported_forms() {
    let rows = query(
        "SELECT SAFE_CAST('x' AS INT) IS NULL, IFNULL(NULL, 'a'), DATE(TIMESTAMP '2020-03-01T10:00:00Z'), \
         EXTRACT(YEAR FROM DATE '2020-03-01'), DATE_DIFF(DATE '2020-03-01', DATE '2020-02-01', DAY), \
         DATE_DIFF(DATE '2021-01-15', DATE '2020-12-31', MONTH), DATE_DIFF(TIMESTAMP '2021-01-01T00:00:00Z', DATE '2020-12-31', YEAR)",
    );
    assert_eq!(rows[1], ["true", "a", "2020-03-01", "2020", "29", "1", "1"]);
    let obs = ndjson("Observation");
    let codings: usize = obs.iter().map(|o| list(&o["code"]["coding"]).len()).sum();
    let rows = query("SELECT SUM(ARRAY_LENGTH(code.coding)) FROM Observation");
    assert_eq!(rows[1][0], codings.to_string());
    // An UNNEST without a name, its element's fields by name, as BigQuery reads it.
    let rows = query("SELECT COUNT(*), COUNT(system) FROM Observation o, UNNEST(o.code.coding)");
    assert_eq!(rows[1], [codings.to_string(), codings.to_string()]);
    let e =
        query_error("SELECT 1 FROM Observation o RIGHT JOIN UNNEST(o.code.coding) AS c ON TRUE");
    assert!(
        e.contains("is not supported") && e.contains("LEFT JOIN"),
        "{e}"
    );
    let e = query_error("SELECT DATE_DIFF(DATE '2020-01-01', DATE '2020-01-01', WEEK)");
    assert!(e.contains("DAY, MONTH and YEAR"), "{e}");
}

/// The SQL tests' dataset converted again with `--columns present` (each file a part of the
/// typed schema): the shell reads it through the tables' full schemas, and every query gives
/// what it gives on files of every column.
#[test]
fn files_of_present_columns_read_as_the_full_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = convert_opts(tmp.path());
    opts.write.columns = fhir2parquet::convert::Columns::Present;
    opts.partition_by =
        vec![fhir2parquet::convert::PartitionSpec::parse("Observation.effective:year").unwrap()];
    fhir2parquet::convert::run(&[shared("fhir-data/synthea-r4-small")], &opts).unwrap();
    let full = Shell::open(dataset(), None).unwrap();
    let present = Shell::open(tmp.path(), None).unwrap();
    let rows = |shell: &Shell, sql: &str| {
        let batches = shell.run_sql(sql).unwrap();
        let mut out = Vec::new();
        fhir2parquet::output::print_batches(&batches, PrintFormat::Csv, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    };
    for sql in [
        // Every column, nested fields no file of `present` holds included (NULL).
        "SELECT * FROM Patient ORDER BY id",
        "SELECT * FROM Observation ORDER BY id",
        "SELECT * FROM Claim ORDER BY id",
        "SELECT code.coding[1].code, code.coding[1].\"userSelected\", code.text, \
         \"valueQuantity\".value, effective_year FROM Observation ORDER BY id",
        "SELECT gender, count(*) FROM Patient GROUP BY gender ORDER BY gender",
        "SELECT id, fhirpath('name.where(use = ''official'').family') AS family FROM Patient ORDER BY id",
        "SELECT id, extension_value(extension, 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-race', 'text') AS race FROM Patient ORDER BY id",
    ] {
        let want = rows(&full, sql);
        assert!(want.lines().count() > 1, "{sql}: no rows");
        assert_eq!(rows(&present, sql), want, "{sql}");
    }
}
