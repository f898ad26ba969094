//! The Python package (`python/`): its wheel built as `maturin build` builds it (the dev
//! profile, which the tests' own build has already compiled every dependency of), installed
//! into a virtual environment that sees the test tools of the Python running the tests
//! (pyarrow, pyspark, DuckDB, polars, scikit-learn), and its pytest suite run there
//! (`python/tests`: every API function, the Spark decoder, the example in `examples/python`).

use std::path::Path;
use std::process::Command;

/// A command with cargo's variables for this test left out, so a nested build is a plain one.
fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("CARGO_") && k != "CARGO_HOME" {
            c.env_remove(k);
        }
    }
    c
}

fn run(c: &mut Command, what: &str) -> String {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

#[test]
fn the_python_package_builds_and_its_suite_passes() {
    let has = |m: &str| {
        Command::new("python3")
            .args(["-c", &format!("import {m}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !crate::present(
        has("maturin") && has("pytest"),
        "maturin and pytest (pip install maturin pytest)",
    ) {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let wheels = root.join("target/wheels/test");
    let _ = std::fs::remove_dir_all(&wheels);
    run(
        command("python3")
            .args(["-m", "maturin", "build", "--profile", "dev", "--out"])
            .arg(&wheels)
            .current_dir(root),
        "maturin build",
    );
    let wheel = std::fs::read_dir(&wheels)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .expect("a wheel");
    let venv = root.join("target/python-test-venv");
    run(
        command("python3")
            .args(["-m", "venv", "--clear", "--system-site-packages"])
            .arg(&venv),
        "python3 -m venv",
    );
    let python = venv.join("bin/python");
    run(
        command(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--force-reinstall",
            ])
            .arg(&wheel),
        "pip install the wheel",
    );
    let out = run(
        command(&python)
            .args([
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "python/tests",
            ])
            .current_dir(root),
        "pytest python/tests",
    );
    eprintln!("{out}");
    // The command the wheel puts on PATH.
    let version = run(
        command(venv.join("bin/fhir2parquet")).arg("--version"),
        "fhir2parquet --version",
    );
    assert_eq!(
        version.trim(),
        format!("fhir2parquet {}", env!("CARGO_PKG_VERSION"))
    );
}
