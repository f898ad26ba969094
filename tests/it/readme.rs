//! The commands of the README and of `docs/`, run as written: every line of their `sh` blocks
//! that reads local data (what is left out, and why, is [`left_out`]'s: servers and stores,
//! `cargo` and `pip`, which CI runs, ...), in a scratch folder holding the repository's
//! `examples/`, with `fhir2parquet` on PATH as the binary under test and
//! `cargo run --release --` read as `fhir2parquet`. Their Python blocks run in `python/tests`.

use std::path::Path;
use std::process::Command;

/// The commands of a Markdown file's `sh` blocks, continuation lines and quoted arguments over
/// several lines joined, comments removed.
fn commands(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_sh = !in_sh && line.trim() == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        // A comment starts at "  #" outside the command's quotes (none of ours quote one).
        let code = match line.find("  #") {
            Some(i) => &line[..i],
            None => line,
        };
        let code = code.trim_end();
        if let Some(head) = code.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(code.trim_start());
        // A quoted argument may span lines (a query): the command goes on.
        if pending.matches('"').count() % 2 == 1 {
            pending.push('\n');
            continue;
        }
        let cmd = std::mem::take(&mut pending);
        if !cmd.trim().is_empty() {
            out.push(cmd.trim().to_string());
        }
    }
    out
}

/// A scratch folder holding the repository's `examples/` (a link), where commands run as a user
/// runs them from a checkout.
fn scratch() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::os::unix::fs::symlink(root.join("examples"), tmp.path().join("examples")).unwrap();
    tmp
}

/// Runs a command as written (`cargo run --release --` read as `fhir2parquet`) with `sh` in
/// `dir`, the binary under test first on PATH, stdin closed.
fn run_as_written(dir: &Path, cmd: &str) -> std::process::Output {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_fhir2parquet"))
        .parent()
        .unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    Command::new("sh")
        .args(["-c", cmd])
        .current_dir(dir)
        .env("PATH", &path)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn the_readmes_local_commands_run_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let tmp = scratch();
    let (mut ran, mut left_out) = (0, Vec::new());
    for cmd in commands(&readme) {
        let cmd = cmd.replace("cargo run --release --", "fhir2parquet");
        if self::left_out(&cmd).is_some() {
            left_out.push(cmd);
            continue;
        }
        assert!(
            cmd.starts_with("fhir2parquet "),
            "a command of the README: {cmd}"
        );
        let out = run_as_written(tmp.path(), &cmd);
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ran += 1;
    }
    eprintln!(
        "{ran} README commands run; left out (servers, stores, cargo): {}",
        left_out.len()
    );
    assert!(ran >= 8, "{ran} commands ran");
}

/// Why a command of the docs is not run here, if it is not: it reaches a server or a store
/// (the cloud and export tests run those forms against local ones), sets the environment for
/// them, or is run by CI or another test as written (cargo, pip, the Python example, the
/// benchmark, fuzzing).
fn left_out(cmd: &str) -> Option<&'static str> {
    // An argument that is a URL (not one inside a query's text).
    let schemes = ["s3://", "gs://", "az://", "abfss://", "http://", "https://"];
    if cmd
        .split_whitespace()
        .any(|w| schemes.iter().any(|s| w.starts_with(s)))
    {
        return Some("a server or a store");
    }
    for (start, why) in [
        ("export ", "the environment of a store"),
        ("openssl ", "a key for a server"),
        ("cargo ", "CI and the stale-model test"),
        ("pip ", "CI"),
        ("python ", "the Python suite (test_example.py)"),
        ("bench/", "the benchmark, not CI"),
        ("fuzz/", "fuzzing, not CI"),
    ] {
        if cmd.starts_with(start) {
            return Some(why);
        }
    }
    None
}

/// Every `sh` command of `docs/*.md`, run as written in a scratch folder holding the
/// repository's `examples/`, a dataset `out` converted from the sample (as the README's first
/// command makes it) and, for the merge example, a `_since` export `since-export/` of one
/// changed Patient; each document from a fresh folder, its commands in order.
#[test]
fn the_docs_commands_run_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let duckdb_cli = Command::new("duckdb").arg("--version").output().is_ok();
    let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    let (mut ran, mut skipped) = (0, Vec::new());
    for doc in docs {
        let text = std::fs::read_to_string(&doc).unwrap();
        let tmp = scratch();
        let out = tmp.path().join("out");
        crate::cloud::ok(&crate::convert_quiet(
            &root.join("examples/synthea-sample"),
            &out,
        ));
        let since = tmp.path().join("since-export");
        std::fs::create_dir(&since).unwrap();
        let patient =
            crate::read_lines(&root.join("examples/synthea-sample/Patient.ndjson.gz")).remove(0);
        let mut changed: serde_json::Value = serde_json::from_str(&patient).unwrap();
        changed["meta"]["lastUpdated"] = "2100-01-01T00:00:00Z".into();
        changed["gender"] = "unknown".into();
        std::fs::write(since.join("Patient.ndjson"), format!("{changed}\n")).unwrap();
        std::fs::write(
            since.join("manifest.json"),
            serde_json::json!({
                "transactionTime": "2100-01-01T00:00:00Z",
                "request": "https://example.org/fhir/$export?_since=2099-01-01T00:00:00Z",
                "requiresAccessToken": false,
                "output": [{"type": "Patient", "url": "Patient.ndjson"}],
                "error": []
            })
            .to_string(),
        )
        .unwrap();
        for cmd in commands(&text) {
            let cmd = cmd.replace("cargo run --release --", "fhir2parquet");
            if let Some(why) = left_out(&cmd) {
                skipped.push(format!("{}: {cmd} ({why})", doc.display()));
                continue;
            }
            if (cmd.contains("| duckdb") || cmd.contains("&& duckdb")) && !duckdb_cli {
                skipped.push(format!("{cmd} (no duckdb command here)"));
                continue;
            }
            let o = run_as_written(tmp.path(), &cmd);
            assert!(
                o.status.success(),
                "{}: {cmd}: {}",
                doc.display(),
                String::from_utf8_lossy(&o.stderr)
            );
            ran += 1;
        }
    }
    eprintln!("{ran} docs commands run; left out:\n{}", skipped.join("\n"));
    assert!(ran >= 30, "{ran} commands ran");
}
