//! The integration tests: one binary, a module per area.

mod bad_input;
mod bigquery;
mod cloud;
mod convert;
mod delta;
mod export;
pub(crate) mod fhirpath_oracle;
mod fhirpath_suite;
mod fuzz;
mod interop;
mod overflow;
mod python;
mod queries;
mod readme;
mod reliability;
mod schema;
mod sql;
mod versions;
mod view;
mod view_sql;
mod warehouse;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The shared test material beside the repository.
pub fn shared(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared")
        .join(rel)
}

/// Runs the built binary.
pub fn bin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fhir2parquet"))
        .args(args)
        .output()
        .expect("the binary runs")
}

/// Runs the binary with standard input.
pub fn bin_stdin(args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_fhir2parquet"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

pub fn convert_opts(out: &Path) -> fhir2parquet::convert::ConvertOptions {
    fhir2parquet::convert::ConvertOptions {
        batch_rows: 1000,
        ..fhir2parquet::convert::ConvertOptions::new(out).with_threads(2)
    }
}

/// The `id` of each resource line.
pub fn ids(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Lines of an NDJSON file (plain or gzip).
pub fn read_lines(path: &Path) -> Vec<String> {
    use std::io::Read;
    let raw = std::fs::read(path).unwrap();
    let text = if path.extension().is_some_and(|e| e == "gz") {
        let mut s = String::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_string(&mut s)
            .unwrap();
        s
    } else {
        String::from_utf8(raw).unwrap()
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// The .ndjson and .ndjson.gz files of a folder, sorted.
pub fn ndjson_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".ndjson"))
        .collect();
    files.sort();
    files
}

/// Resources per type in the NDJSON files of `dir`, read with serde_json (not our parser).
pub fn resources_per_type(dir: &Path) -> std::collections::BTreeMap<String, u64> {
    let mut counts = std::collections::BTreeMap::new();
    for f in ndjson_files(dir) {
        for line in read_lines(&f) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            let t = v["resourceType"].as_str().unwrap().to_string();
            *counts.entry(t).or_default() += 1;
        }
    }
    counts
}

/// Where the PyPI packages of DuckDB's extensions (duckdb-ext-*) put them.
pub fn duckdb_extensions() -> String {
    let ext = Command::new("python3")
        .args([
            "-c",
            "import duckdb_ext; print(list(duckdb_ext.__path__)[0] + '/extensions')",
        ])
        .output()
        .unwrap();
    String::from_utf8(ext.stdout).unwrap().trim().to_string()
}

/// Where `.ci/run` installs the current DuckDB (2.x) beside the 1.4 LTS the other tests import:
/// a folder for PYTHONPATH. The DuckDB tests run on both; none of the extensions on PyPI are
/// built for 2.x yet, so the 2.x runs read plain Parquet.
pub const DUCKDB2: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/duckdb2");

/// Whether [`DUCKDB2`] holds a DuckDB 2.x (see [`present`]).
pub fn duckdb2() -> bool {
    let found = Command::new("python3")
        .env("PYTHONPATH", DUCKDB2)
        .args([
            "-c",
            "import duckdb, sys; sys.exit(not duckdb.__version__.startswith('2.'))",
        ])
        .status()
        .is_ok_and(|s| s.success());
    present(
        found,
        "DuckDB 2 (`pip install --target target/duckdb2 'duckdb>=2,<3'`)",
    )
}

/// The run record `OUT/_fhir2parquet.json` of a converted dataset.
pub fn run_record(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("_fhir2parquet.json")).unwrap()).unwrap()
}

/// Runs `convert INPUT -o OUT -q` with the binary.
pub fn convert_quiet(input: &Path, out: &Path) -> Output {
    bin(&[
        "convert",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-q",
    ])
}

/// The first file of a folder (a table's first data file: its Delta log left aside).
pub fn first_file(dir: &Path) -> PathBuf {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.ends_with("_delta_log"))
        .collect();
    files.sort();
    files.remove(0)
}

/// Every file under `dir`, at any depth: the data of a dataset or table, its Delta logs left
/// aside.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.ends_with("_delta_log") {
            continue;
        }
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The files of a Delta table's current version (paths inside the table's folder), from its
/// log replayed here: the `add` and `remove` actions of its commits in order (the tables of
/// the tests have no checkpoint: one found is a failure, not a guess).
pub fn delta_current_files(table: &Path) -> std::collections::BTreeSet<String> {
    let log = table.join("_delta_log");
    let mut commits: Vec<PathBuf> = std::fs::read_dir(&log)
        .unwrap()
        .map(|c| c.unwrap().path())
        .filter(|c| {
            let name = c.file_name().unwrap().to_string_lossy().into_owned();
            assert!(!name.contains("checkpoint"), "{}", c.display());
            name.ends_with(".json") && !name.starts_with('_') && !name.starts_with('.')
        })
        .collect();
    commits.sort();
    let mut files = std::collections::BTreeSet::new();
    for c in commits {
        for line in std::fs::read_to_string(&c).unwrap().lines() {
            let action: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(path) = action["add"]["path"].as_str() {
                files.insert(path.to_string());
            } else if let Some(path) = action["remove"]["path"].as_str() {
                files.remove(path);
            }
        }
    }
    files
}

/// A Parquet file's schema, as text.
pub fn schema_text(meta: &parquet::file::metadata::FileMetaData) -> String {
    let mut text = Vec::new();
    parquet::schema::printer::print_schema(&mut text, meta.schema_descr().root_schema());
    String::from_utf8(text).unwrap()
}

/// The footer of a Parquet file.
pub fn parquet_metadata(file: &Path) -> parquet::file::metadata::ParquetMetaData {
    use parquet::file::reader::FileReader;
    let reader =
        parquet::file::reader::SerializedFileReader::new(std::fs::File::open(file).unwrap())
            .unwrap();
    reader.metadata().clone()
}

/// Every resource of the NDJSON files of `src` is in `back/<Type>.ndjson` (written by
/// `to-ndjson`), equal as JSON with every number's text as written, and nothing else is;
/// returns how many there are. Checked by a parser that is not ours, Python's json
/// (`tests/interop/same_resources.py`).
pub fn assert_same_resources(src: &Path, back: &Path) -> usize {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/same_resources.py"
    );
    let o = Command::new("python3")
        .args([script, src.to_str().unwrap(), back.to_str().unwrap()])
        .output()
        .expect("python3, to check the round trip");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

/// Whether something a test needs is installed. A missing one skips the test, with a word,
/// outside CI, and fails it in CI, where `.ci/run` installs everything.
pub fn present(found: bool, what: &str) -> bool {
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install {what} (see .ci/run)"
        );
        eprintln!("skipped: install {what} to run this test");
    }
    found
}

/// Whether python3 imports these modules (see [`present`]).
pub fn python_has(modules: &str, install: &str) -> bool {
    let found = Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .status()
        .is_ok_and(|s| s.success());
    present(found, &format!("`pip install {install}`"))
}

/// A `_since` export of Patients in `dir`, as a server hands it out: its manifest (the given
/// `transactionTime`, `Patient.ndjson` as its output, which the caller writes) and its `deleted`
/// file, one Bundle of the given entries (`DELETE Patient/<id>` requests).
pub fn write_since_export(dir: &Path, transaction_time: &str, entries: Vec<serde_json::Value>) {
    let bundle =
        serde_json::json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
    std::fs::write(dir.join("deleted.ndjson"), format!("{bundle}\n")).unwrap();
    let manifest = serde_json::json!({
        "transactionTime": transaction_time,
        "request": "https://example.org/fhir/$export?_since=2021-06-01T00:00:00Z",
        "requiresAccessToken": false,
        "output": [{"type": "Patient", "url": "https://example.org/files/Patient.ndjson"}],
        "deleted": [{"type": "Bundle", "url": "https://example.org/files/deleted.ndjson"}],
        "error": []
    });
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
}
