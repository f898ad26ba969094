//! One writer per dataset: `OUT/_fhir2parquet.lock`, made with create-if-absent, naming the run
//! that holds it (run id, pid, host, start time).
//!
//! A lock whose process is dead (same host, no such pid) is stale: the next writer takes it
//! over and says so. A lock held by a live run makes a second writer fail at once with a message
//! naming that run, or wait for it (`--wait`). On an object store the lock is a conditional put
//! (`PutMode::Create`); there a dead run on another host cannot be told from a live one, and the
//! message says which object to delete.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use object_store::{PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::store::{block_on, Location, Remote};

/// The lock's name in a dataset.
pub use super::layout::LOCK;

/// Who holds a lock.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Owner {
    pub run_id: String,
    pub pid: u32,
    pub host: String,
    pub started: String,
}

impl Owner {
    fn me(run_id: &str) -> Owner {
        Owner {
            run_id: run_id.to_string(),
            pid: std::process::id(),
            host: host(),
            started: chrono::Utc::now().to_rfc3339(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "run {} (pid {} on {}, started {})",
            self.run_id, self.pid, self.host, self.started
        )
    }

    /// Whether the owner is known to be gone: a process of this host that no longer exists.
    fn is_dead(&self) -> bool {
        self.host == host() && !alive(self.pid)
    }
}

fn host() -> String {
    fs_err::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs_err::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// A held lock, released when dropped.
pub struct Lock {
    place: Place,
    /// What taking the lock over from a dead run found (for the user).
    pub took_over: Option<String>,
}

enum Place {
    Local(PathBuf),
    Remote(Remote),
}

impl Drop for Lock {
    fn drop(&mut self) {
        match &self.place {
            Place::Local(p) => {
                let _ = fs_err::remove_file(p);
            }
            Place::Remote(r) => {
                let _ = r.delete(vec![r.path(LOCK)]);
            }
        }
    }
}

/// How long a writer waits between looks at a held lock.
const POLL: Duration = Duration::from_millis(200);
/// How long a lock may name no writer before it is taken for damaged: a writer puts its name
/// in the instant it creates the lock, so only a lock written by something else (or cut short)
/// stays unreadable.
const UNREADABLE_GRACE: Duration = Duration::from_secs(2);

/// Takes the lock of `dataset` for `run_id`; with `wait`, waits for a live holder to finish.
pub fn acquire(dataset: &Location, run_id: &str, wait: bool) -> Result<Lock> {
    let me = Owner::me(run_id);
    let mut took_over = None;
    let mut unreadable_since: Option<std::time::Instant> = None;
    let lock_name = || match dataset {
        Location::Local(d) => d.join(LOCK).display().to_string(),
        Location::Remote(r) => r.url(LOCK),
    };
    loop {
        let holder = match dataset {
            Location::Local(dir) => match try_local(dir, &me)? {
                None => {
                    return Ok(Lock {
                        place: Place::Local(dir.join(LOCK)),
                        took_over,
                    })
                }
                Some(h) => h,
            },
            Location::Remote(r) => match try_remote(r, &me)? {
                None => {
                    return Ok(Lock {
                        place: Place::Remote(r.clone()),
                        took_over,
                    })
                }
                Some(h) => h,
            },
        };
        match holder {
            // Being written this instant: look again, for a while.
            None => {
                let since = *unreadable_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > UNREADABLE_GRACE {
                    bail!(
                        "{} exists but names no writer (damaged, or not written by \
                         fhir2parquet): waiting would not end; if no run is writing {}, \
                         delete it",
                        lock_name(),
                        dataset.display()
                    );
                }
                std::thread::sleep(Duration::from_millis(20))
            }
            Some(owner) if owner.is_dead() => {
                break_stale(dataset)?;
                took_over = Some(format!(
                    "took over the lock of {}, which ended without releasing it",
                    owner.describe()
                ));
            }
            Some(_) if wait => std::thread::sleep(POLL),
            Some(owner) => {
                let lock = lock_name();
                bail!(
                    "{} is being written by {}: wait for it to finish (or pass --wait); if \
                     that run is gone, delete {lock}",
                    dataset.display(),
                    owner.describe()
                )
            }
        }
    }
}

/// `Ok(None)`: the lock is ours; `Ok(Some(None))`: held, owner not readable yet;
/// `Ok(Some(Some(owner)))`: held by owner.
fn try_local(dir: &Path, me: &Owner) -> Result<Option<Option<Owner>>> {
    let path = dir.join(LOCK);
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(mut f) => {
            f.write_all(&serde_json::to_vec(me)?)
                .and_then(|()| f.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(None)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let owner = fs_err::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            Ok(Some(owner))
        }
        Err(e) => Err(e).with_context(|| {
            format!(
                "cannot create {}: check that the folder exists and is writable",
                path.display()
            )
        }),
    }
}

fn try_remote(r: &Remote, me: &Owner) -> Result<Option<Option<Owner>>> {
    let path = r.path(LOCK);
    let opts = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    let body = PutPayload::from(serde_json::to_vec(me)?);
    match block_on(r.store.put_opts(&path, body, opts)) {
        Ok(_) => Ok(None),
        Err(object_store::Error::AlreadyExists { .. }) => {
            let owner = r.read(LOCK)?.and_then(|b| serde_json::from_slice(&b).ok());
            Ok(Some(owner))
        }
        Err(e) => Err(r.explain(e, &path)),
    }
}

/// Removes a dead run's lock. Locally the lock is first renamed to a name of our own, so that of
/// two writers taking it over at once only one removes it.
fn break_stale(dataset: &Location) -> Result<()> {
    match dataset {
        Location::Local(dir) => {
            let aside = dir.join(format!(".{LOCK}.stale-{}", std::process::id()));
            match fs_err::rename(dir.join(LOCK), &aside) {
                Ok(()) => {
                    let _ = fs_err::remove_file(aside);
                    Ok(())
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e).context("cannot remove a stale lock"),
            }
        }
        Location::Remote(r) => r.delete(vec![r.path(LOCK)]),
    }
}

/// The run holding the dataset's lock, if any (for readers: they never take it).
pub fn holder(dataset: &Path) -> Option<Owner> {
    let b = fs_err::read(dataset.join(LOCK)).ok()?;
    serde_json::from_slice(&b).ok()
}

/// Takes the lock only if nobody holds it (or its holder is dead): for readers that repair an
/// abandoned publish.
pub fn try_acquire(dataset: &Path, run_id: &str) -> Option<Lock> {
    let loc = Location::Local(dataset.to_path_buf());
    match holder(dataset) {
        Some(o) if !o.is_dead() => None,
        _ => acquire(&loc, run_id, false).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_and_a_dead_ones_lock_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let loc = Location::Local(dir.path().to_path_buf());
        let first = acquire(&loc, "one", false).unwrap();
        let err = acquire(&loc, "two", false).err().unwrap().to_string();
        assert!(err.contains("run one"), "{err}");
        assert!(err.contains("--wait"), "{err}");
        drop(first);
        let second = acquire(&loc, "two", false).unwrap();
        assert!(second.took_over.is_none());
        std::mem::forget(second);
        // A lock left by a process that is gone.
        let dead = Owner {
            run_id: "dead".into(),
            pid: u32::MAX - 1,
            host: host(),
            started: "2020-01-01T00:00:00Z".into(),
        };
        fs_err::write(dir.path().join(LOCK), serde_json::to_vec(&dead).unwrap()).unwrap();
        let third = acquire(&loc, "three", false).unwrap();
        assert!(third.took_over.as_deref().unwrap().contains("run dead"));
        drop(third);
        assert!(!dir.path().join(LOCK).exists());
    }

    /// A lock that names no writer (damaged, or put there by something else) is not waited
    /// for forever, with or without `--wait`: an error that says to delete it.
    #[test]
    fn an_unreadable_lock_gives_up_with_a_message() {
        let dir = tempfile::tempdir().unwrap();
        let loc = Location::Local(dir.path().to_path_buf());
        fs_err::write(dir.path().join(LOCK), b"garbage").unwrap();
        for wait in [false, true] {
            let started = std::time::Instant::now();
            let err = acquire(&loc, "one", wait).err().unwrap().to_string();
            assert!(
                err.contains("names no writer") && err.contains("delete it"),
                "{err}"
            );
            assert!(started.elapsed() < UNREADABLE_GRACE * 3);
        }
        // The file is left for the user to judge.
        assert!(dir.path().join(LOCK).exists());
    }
}
