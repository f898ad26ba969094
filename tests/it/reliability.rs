//! One writer per dataset, publishing as one step, and errors while writing.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{run_record, shared};

fn convert_cmd(input: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fhir2parquet"));
    c.args([
        "convert",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-q",
    ]);
    c.args(extra);
    c
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The run id a data file's name carries (`part-<run>-<n>.parquet`), if it is one.
fn run_of(file_name: &str) -> Option<String> {
    let rest = file_name.strip_prefix("part-")?;
    Some(rest.rsplit_once('-').unwrap().0.to_string())
}

/// Adds `run` to `runs` unless it is there.
fn add_run(runs: &mut Vec<String>, run: String) {
    if !runs.contains(&run) {
        runs.push(run);
    }
}

/// Per type folder of OUT: the run ids its Parquet files carry (`part-<run>-<n>.parquet`).
fn runs_per_type(out: &Path) -> BTreeMap<String, Vec<String>> {
    fn walk(dir: &Path, runs: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, runs);
            } else if let Some(run) = run_of(&e.file_name().to_string_lossy()) {
                add_run(runs, run);
            }
        }
    }
    let mut out_map = BTreeMap::new();
    for e in std::fs::read_dir(out).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_dir() && !name.starts_with('.') && !name.starts_with('_') {
            let mut runs = Vec::new();
            walk(&e.path(), &mut runs);
            out_map.insert(name, runs);
        }
    }
    out_map
}

/// Rows of the Parquet files of a type folder.
fn rows(dir: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            n += rows(&p);
        } else if p.extension().is_some_and(|x| x == "parquet") {
            n += crate::parquet_metadata(&p).file_metadata().num_rows() as u64;
        }
    }
    n
}

/// Every type folder holds the files of one run; every type of the run record holds that run's
/// files with the recorded rows.
fn assert_whole(out: &Path) {
    let runs = runs_per_type(out);
    for (t, r) in &runs {
        assert_eq!(r.len(), 1, "{t} mixes runs {r:?}");
    }
    let record = run_record(out);
    let run = record["run_id"].as_str().unwrap();
    for (t, rec) in record["types"].as_object().unwrap() {
        assert_eq!(
            runs[t],
            vec![run.to_string()],
            "{t}: files of another run than the record"
        );
        assert_eq!(rows(&out.join(t)), rec["rows"].as_u64().unwrap(), "{t}");
    }
}

#[test]
fn a_second_writer_fails_naming_the_first_or_waits_for_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // A slow first run: standard input held open.
    let mut first = Command::new(env!("CARGO_BIN_EXE_fhir2parquet"))
        .args(["convert", "-", "-o", out.to_str().unwrap(), "-q"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !out.join("_fhir2parquet.lock").exists() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let patients = shared("fhir-data/synthea-r4-small/Patient.ndjson");
    let o = convert_cmd(&patients, &out, &[]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("is being written by run"), "{err}");
    assert!(err.contains(&format!("pid {}", first.id())), "{err}");
    assert!(err.contains("--wait"), "{err}");

    // With --wait the second run goes once the first is done; both outcomes are whole.
    let second = convert_cmd(&patients, &out, &["--wait"]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let observations =
        std::fs::read(shared("fhir-data/synthea-r4-small/Observation.ndjson")).unwrap();
    {
        use std::io::Write;
        let mut stdin = first.stdin.take().unwrap();
        stdin.write_all(&observations).unwrap();
    }
    assert!(first.wait().unwrap().success());
    ok(&second.wait_with_output().unwrap());
    let runs = runs_per_type(&out);
    assert_eq!(
        runs.keys().collect::<Vec<_>>(),
        vec!["Observation", "Patient"]
    );
    assert_ne!(runs["Observation"], runs["Patient"]);
    assert_whole(&out);
    let observations = crate::read_lines(&shared("fhir-data/synthea-r4-small/Observation.ndjson"));
    assert_eq!(rows(&out.join("Observation")), observations.len() as u64);
    assert!(!out.join("_fhir2parquet.lock").exists());
}

#[test]
fn a_kill_at_any_point_of_publishing_leaves_every_type_whole() {
    let small = shared("fhir-data/synthea-r4-small");
    let ten = shared("fhir-data/synthea-r4-10-patients");
    for point in ["journal-written", "type-swapped", "record-written"] {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        // The publish steps of plain folders (Delta tables: delta.rs).
        let plain = ["--format", "parquet"];
        ok(&convert_cmd(&small, &out, &plain).output().unwrap());
        let before = run_record(&out)["run_id"].as_str().unwrap().to_string();
        let o = convert_cmd(&ten, &out, &plain)
            .env("FHIR2PARQUET_FAILPOINT", point)
            .output()
            .unwrap();
        assert!(!o.status.success(), "{point}: the run was not stopped");
        // Right after the kill: each type is the old run's or the new one's, never a mix.
        for (t, r) in runs_per_type(&out) {
            assert_eq!(r.len(), 1, "{point}: {t} mixes runs {r:?}");
        }
        // A reader finishes the publish (the run was committed), and the record matches.
        let q = Command::new(env!("CARGO_BIN_EXE_fhir2parquet"))
            .args(["sql", out.to_str().unwrap(), "-q", "-c", "SELECT 1"])
            .output()
            .unwrap();
        ok(&q);
        assert_whole(&out);
        let after = run_record(&out)["run_id"].as_str().unwrap().to_string();
        assert_ne!(
            after, before,
            "{point}: the committed run was not published"
        );
        let names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names
                .iter()
                .all(|n| !n.starts_with(".fhir2parquet-tmp-") && !n.contains("pending")),
            "{point}: {names:?}"
        );
    }
}

/// Per table of OUT: the run ids of the files its current version names (its log replayed).
fn current_runs_per_type(out: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out_map = BTreeMap::new();
    for e in std::fs::read_dir(out).unwrap().flatten() {
        if !e.path().join("_delta_log").is_dir() {
            continue;
        }
        let mut runs: Vec<String> = Vec::new();
        for f in crate::delta_current_files(&e.path()) {
            let name = f.rsplit('/').next().unwrap();
            add_run(
                &mut runs,
                run_of(name).expect("a table names data files only"),
            );
        }
        // A log without a version (a kill while version 0 was written) is no table yet.
        if !runs.is_empty() {
            out_map.insert(e.file_name().to_string_lossy().into_owned(), runs);
        }
    }
    out_map
}

/// Kills at moments spread over a whole run (measured first, so the spread follows the build's
/// speed), for both formats: what a reader sees of each type (a plain folder's files, a Delta
/// table's current version) is the previous run's or the killed run's alone, never a mix, and
/// stays so after the next writer or reader.
#[test]
fn kills_at_random_moments_never_mix_runs() {
    let small = shared("fhir-data/synthea-r4-small");
    let examples = shared("fhir-data/r4-spec-examples");
    for delta in [false, true] {
        let format: &[&str] = match delta {
            true => &["--format", "delta"],
            false => &["--format", "parquet"],
        };
        let seen = |out: &Path| match delta {
            true => current_runs_per_type(out),
            false => runs_per_type(out),
        };
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        ok(&convert_cmd(&small, &out, format).output().unwrap());
        // One whole run of the 140 types of the specification examples, timed.
        let args: Vec<&str> = [format, &["-j", "1"]].concat();
        let timed = tmp.path().join("timed");
        let started = Instant::now();
        ok(&convert_cmd(&examples, &timed, &args).output().unwrap());
        let whole = started.elapsed();
        let mut finished = 0;
        // Kills before, while and after the run writes and publishes.
        for (i, share) in [0.02, 0.1, 0.25, 0.4, 0.55, 0.7, 0.8, 0.9, 1.0, 2.0]
            .iter()
            .enumerate()
        {
            let delay = whole.mul_f64(*share);
            let before = seen(&out);
            let before_record = run_record(&out)["run_id"].clone();
            let mut child = convert_cmd(&examples, &out, &args)
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(delay);
            let _ = child.kill();
            let status = child.wait().unwrap();
            finished += status.success() as usize;
            // Each type as it was, or the killed run's alone.
            for (t, r) in seen(&out) {
                assert!(
                    before.get(&t) == Some(&r) || r.len() == 1,
                    "{format:?}, kill {i} after {delay:?} of {whole:?}: {t} mixes runs {r:?}"
                );
            }
            // The next writer finishes or discards what the killed one left.
            if i % 2 == 0 {
                let patients = small.join("Patient.ndjson");
                let append: Vec<&str> = [format, &["--append"]].concat();
                ok(&convert_cmd(&patients, &out, &append).output().unwrap());
            } else {
                ok(&Command::new(env!("CARGO_BIN_EXE_fhir2parquet"))
                    .args(["sql", out.to_str().unwrap(), "-q", "-c", "SELECT 1"])
                    .output()
                    .unwrap());
            }
            let record = run_record(&out);
            for (t, r) in seen(&out) {
                // Appends add Patient files of later runs beside earlier ones: that is no mix.
                assert!(
                    t == "Patient" || r.len() == 1,
                    "{format:?}, after kill {i}: {t} mixes runs {r:?}"
                );
                // A plain run is published whole, its record with it. A Delta run commits each
                // table on its own, its record last: a run killed in between leaves tables
                // newer than the record, so there the record is checked where it changed.
                let recorded = record["types"].get(&t).is_some();
                if t != "Patient" && recorded && (!delta || record["run_id"] != before_record) {
                    assert_eq!(
                        r[0],
                        record["run_id"].as_str().unwrap(),
                        "{format:?}, after kill {i}: {t}"
                    );
                }
            }
        }
        // The spread reached past the run's end.
        assert!(finished >= 1, "{format:?}: no run finished before its kill");
    }
}

/// A file-size limit (setrlimit) stands for a full disk: the run fails naming the path, the
/// previous data stays, and nothing of the failed run is left.
#[test]
fn a_full_disk_keeps_the_previous_data() {
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let small = shared("fhir-data/synthea-r4-small");
    ok(&convert_cmd(&small, &out, &[]).output().unwrap());
    let before = runs_per_type(&out);
    // Every column: files large enough to pass the limit below.
    let all = ["--columns", "all"];
    let mut c = convert_cmd(&shared("fhir-data/synthea-r4-10-patients"), &out, &all);
    // SAFETY: setrlimit and signal are async-signal-safe; they run in the child before exec.
    unsafe {
        c.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 200_000,
                rlim_max: 200_000,
            };
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(out.to_str().unwrap()), "{err}");
    assert!(
        err.contains("File too large") || err.contains("space"),
        "{err}"
    );
    assert_eq!(runs_per_type(&out), before);
    assert_whole(&out);
    let left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') || n.contains("pending") || n.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// `upload` holds the dataset's lock for the whole upload (a convert cannot replace folders
/// while their files are being sent): killed mid-upload, the lock it held names it.
#[test]
fn upload_holds_the_dataset_lock_to_its_end() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let patients = shared("fhir-data/synthea-r4-small/Patient.ndjson");
    ok(&convert_cmd(&patients, &out, &[]).output().unwrap());
    assert!(!out.join("_fhir2parquet.lock").exists());
    let o = Command::new(env!("CARGO_BIN_EXE_fhir2parquet"))
        .args(["upload", out.to_str().unwrap(), "s3://bucket/fhir", "-q"])
        .env("FHIR2PARQUET_FAILPOINT", "upload-locked")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let lock: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_fhir2parquet.lock")).unwrap()).unwrap();
    assert_eq!(lock["run_id"], "upload", "{lock}");
    // A convert meanwhile (the upload's process is gone: its lock is taken over) still works.
    ok(&convert_cmd(&patients, &out, &[]).output().unwrap());
}
