//! The README's commands, run as written: every line of its `sh` blocks that reads local data
//! (those that reach a server or a store, `s3://` and `https://`, are left out and counted, as are
//! `cargo install`, `cargo test` and `pip install .`, which CI runs), in a scratch folder holding
//! the repository's `examples/`, with `fhir2parquet` on PATH as the binary under test and
//! `cargo run --release --` read as `fhir2parquet`. Its Python blocks run in `python/tests`.

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

#[test]
fn the_readmes_local_commands_run_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(root.join("examples"), tmp.path().join("examples")).unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_fhir2parquet"))
        .parent()
        .unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let (mut ran, mut left_out) = (0, Vec::new());
    for cmd in commands(&readme) {
        if cmd.contains("s3://")
            || cmd.contains("https://")
            || cmd.starts_with("cargo install")
            || cmd == "cargo test"
            || cmd == "pip install ."
        {
            left_out.push(cmd);
            continue;
        }
        let cmd = cmd.replace("cargo run --release --", "fhir2parquet");
        assert!(
            cmd.starts_with("fhir2parquet "),
            "a command of the README: {cmd}"
        );
        let out = Command::new("sh")
            .args(["-c", &cmd])
            .current_dir(tmp.path())
            .env("PATH", &path)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
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
