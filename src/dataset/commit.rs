//! Publishing a finished local run as one step, and finishing the publish of a run that was
//! killed in the middle of it.
//!
//! A run writes everything, its run record included, under `OUT/.fhir2parquet-tmp-<run>/`. Then:
//!
//! 1. `OUT/_fhir2parquet-pending-<run>.json` (the journal) is written: from here on the run is
//!    committed, and whoever finds the journal finishes the publish (rolls forward);
//! 2. each folder (a type, `_rejects`) takes its place: a folder new to OUT is renamed in; one
//!    that replaces an older one is swapped with it in one atomic `renameat2(RENAME_EXCHANGE)`,
//!    so a reader sees the old type or the new, never a mix and never none; with `--append`,
//!    the files are moved in;
//! 3. the run record is renamed into place;
//! 4. the temporary folder (now holding the replaced data) and the journal are removed.
//!
//! The next `convert` (under the dataset lock) and the next reader (`sql`, `view`, `to-ndjson`,
//! `upload`, when no live writer holds the lock) finish any journal they find. Each step is
//! idempotent: a folder already swapped is recognised by holding files named after the run.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The journal's name: `<prefix><run>.json`.
pub const JOURNAL_PREFIX: &str = "_fhir2parquet-pending-";
const RUN_RECORD: &str = "_fhir2parquet.json";
/// Inside the temporary folder: the data a publish replaced, removed with it.
const REPLACED: &str = ".replaced";

#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    run_id: String,
    /// The temporary folder's name in OUT.
    tmp: String,
    append: bool,
}

/// A test hook: the process aborts, as if killed, when `FHIR2PARQUET_FAILPOINT` names this
/// point of the publish.
pub fn failpoint(name: &str) {
    if std::env::var("FHIR2PARQUET_FAILPOINT").is_ok_and(|v| v == name) {
        std::process::abort();
    }
}

fn journal_path(out: &Path, run_id: &str) -> PathBuf {
    out.join(format!("{JOURNAL_PREFIX}{run_id}.json"))
}

/// Publishes the finished run in `tmp` (a folder of `out`) with its run record `record`.
pub fn publish(out: &Path, tmp: &Path, run_id: &str, append: bool, record: &str) -> Result<()> {
    fs_err::write(tmp.join(RUN_RECORD), record)?;
    let journal = Journal {
        run_id: run_id.to_string(),
        tmp: tmp
            .file_name()
            .expect("a folder of OUT")
            .to_string_lossy()
            .into_owned(),
        append,
    };
    let path = journal_path(out, run_id);
    let partial = out.join(format!(".{JOURNAL_PREFIX}{run_id}.json.tmp"));
    fs_err::write(&partial, serde_json::to_vec_pretty(&journal)?)
        .and_then(|()| fs_err::rename(&partial, &path))
        .with_context(|| format!("cannot write {}", path.display()))?;
    failpoint("journal-written");
    roll_forward(out, &journal)
}

/// Whether the run's journal is in OUT (the run is committed, its publish maybe unfinished).
pub fn is_pending(out: &Path, run_id: &str) -> bool {
    journal_path(out, run_id).exists()
}

/// Finishes every publish a killed run left (see the module documentation).
pub fn recover(out: &Path) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let Ok(entries) = fs_err::read_dir(out) else {
        return Ok(done);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.starts_with(JOURNAL_PREFIX) && name.ends_with(".json")) {
            continue;
        }
        let journal: Journal = serde_json::from_slice(&fs_err::read(e.path())?)
            .with_context(|| format!("{} is damaged", e.path().display()))?;
        roll_forward(out, &journal)?;
        done.push(journal.run_id);
    }
    Ok(done)
}

/// Whether a folder holds a file of the run (file names carry the run id).
fn holds_run(dir: &Path, run_id: &str) -> bool {
    let Ok(entries) = fs_err::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        match p.is_dir() {
            true => holds_run(&p, run_id),
            false => e.file_name().to_string_lossy().contains(run_id),
        }
    })
}

fn roll_forward(out: &Path, j: &Journal) -> Result<()> {
    let tmp = out.join(&j.tmp);
    if tmp.is_dir() {
        let replaced = tmp.join(REPLACED);
        let mut names: Vec<_> = fs_err::read_dir(&tmp)?
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n != RUN_RECORD && n != REPLACED)
            .collect();
        names.sort();
        for name in names {
            let from = tmp.join(&name);
            let dest = out.join(&name);
            if !dest.exists() {
                fs_err::rename(&from, &dest)
                    .with_context(|| format!("cannot publish {}", dest.display()))?;
            } else if j.append {
                move_into(&from, &dest)?;
                let _ = fs_err::remove_dir_all(&from);
            } else {
                if !holds_run(&dest, &j.run_id) {
                    exchange(&from, &dest)?;
                    failpoint("type-swapped");
                }
                // `from` now holds the replaced data.
                fs_err::create_dir_all(&replaced)?;
                fs_err::rename(&from, replaced.join(&name))?;
            }
        }
        let record = tmp.join(RUN_RECORD);
        if record.exists() {
            fs_err::rename(&record, out.join(RUN_RECORD))
                .with_context(|| format!("cannot write {}", out.join(RUN_RECORD).display()))?;
        }
        failpoint("record-written");
        fs_err::remove_dir_all(&tmp).with_context(|| format!("cannot remove {}", tmp.display()))?;
    }
    let journal = journal_path(out, &j.run_id);
    fs_err::remove_file(&journal).with_context(|| format!("cannot remove {}", journal.display()))
}

/// Swaps two folders in one step.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let ca = CString::new(a.as_os_str().as_bytes())?;
    let cb = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: two valid NUL-terminated paths; renameat2 only reads them.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    // A filesystem without RENAME_EXCHANGE: two renames.
    if e.raw_os_error() == Some(libc::EINVAL) || e.raw_os_error() == Some(libc::ENOSYS) {
        return exchange_by_renames(a, b);
    }
    Err(e).with_context(|| format!("cannot replace {}", b.display()))
}

#[cfg(not(target_os = "linux"))]
fn exchange(a: &Path, b: &Path) -> Result<()> {
    exchange_by_renames(a, b)
}

fn exchange_by_renames(a: &Path, b: &Path) -> Result<()> {
    let aside = a.with_extension("swap");
    fs_err::rename(b, &aside)?;
    fs_err::rename(a, b)?;
    fs_err::rename(aside, a)?;
    Ok(())
}

fn move_into(from: &Path, to: &Path) -> Result<()> {
    fs_err::create_dir_all(to)?;
    for entry in fs_err::read_dir(from)? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            move_into(&entry.path(), &dest)?;
        } else {
            fs_err::rename(entry.path(), dest)?;
        }
    }
    Ok(())
}
