//! The integration tests: one binary, a module per area.

mod bad_input;
mod convert;
mod interop;
mod queries;
mod schema;
mod sql;
mod view;

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
        out: out.to_path_buf(),
        append: false,
        partition_by: Vec::new(),
        write: fhir2parquet::convert::WriteOptions {
            codec: fhir2parquet::convert::Codec::Zstd,
            zstd_level: 1,
            target_file_bytes: 512 << 20,
            row_group_rows: 122_880,
        },
        threads: 2,
        batch_rows: 1000,
        progress: false,
    }
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

/// The first file of a folder.
pub fn first_file(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

/// The footer of a Parquet file.
pub fn parquet_metadata(file: &Path) -> parquet::file::metadata::ParquetMetaData {
    use parquet::file::reader::FileReader;
    let reader =
        parquet::file::reader::SerializedFileReader::new(std::fs::File::open(file).unwrap())
            .unwrap();
    reader.metadata().clone()
}
