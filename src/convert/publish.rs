//! Making a finished run visible, all at once or (on an object store) as near to it as stores
//! allow, and cleaning up after runs that were killed.
//!
//! Locally, see [`crate::dataset::commit`]. An object store has no rename: there each data file is a multipart upload that is
//! completed only here, after every file of the run has been uploaded:
//!
//! 1. `_fhir2parquet-pending-<run>.json` is written, listing the run's files and (unless
//!    `--append`) the files of earlier runs in the folders it writes, which it replaces;
//! 2. every upload is completed (each file appears at once, whole), the rejects are uploaded;
//! 3. `_fhir2parquet.json`, the run record, is written: the commit point;
//! 4. the replaced files are deleted;
//! 5. the pending list is deleted.
//!
//! A run killed before step 1 leaves only incomplete uploads, which no reader sees. One that
//! fails before step 3 deletes what it completed; one killed then leaves its pending list, and
//! the next run into the same prefix deletes the files it names before it starts. One killed
//! after step 3 also leaves its list: the next run sees the record names that run and deletes
//! the replaced files instead.

use anyhow::Result;
use object_store::path::Path as ObjPath;
use serde::{Deserialize, Serialize};

use super::writer::{abort_all, complete_all};
use super::{RunRecord, REJECTS_DIR, RUN_RECORD};
use crate::store::{block_on, PendingUpload, Remote};

use crate::dataset::layout::{is_pending_list, pending_list};

/// The list a run writes before it makes its files visible.
#[derive(Serialize, Deserialize)]
struct Pending {
    run_id: String,
    /// The run's files: object paths relative to the dataset prefix.
    files: Vec<String>,
    /// Files of earlier runs that the run replaces, deleted once it is published.
    #[serde(default)]
    obsolete: Vec<String>,
}

/// A finished run on an object store: its uploads, its rejects (local files) and its record.
pub struct RemoteRun<'a> {
    pub remote: &'a Remote,
    pub run_id: &'a str,
    pub append: bool,
    /// Data files: folder (relative, `/`-separated) and the pending upload.
    pub uploads: Vec<(String, PendingUpload)>,
    pub rejects: Vec<std::path::PathBuf>,
}

impl RemoteRun<'_> {
    fn rel(&self, path: &ObjPath) -> String {
        let prefix = self.remote.prefix.as_ref();
        let p = path.as_ref();
        match prefix.is_empty() {
            true => p.to_string(),
            false => p
                .strip_prefix(prefix)
                .unwrap_or(p)
                .trim_start_matches('/')
                .to_string(),
        }
    }

    /// Commits the run (the steps of the module documentation): before the run record is
    /// written a failure takes back what the run made visible; after it, the files the run
    /// replaces are deleted, by this run or (after a crash) the next.
    pub fn publish(mut self, record: &mut RunRecord) -> Result<()> {
        let remote = self.remote;
        let uploads = std::mem::take(&mut self.uploads);
        let mut files: Vec<String> = uploads.iter().map(|(_, u)| self.rel(&u.path)).collect();
        let reject_names: Vec<String> = self
            .rejects
            .iter()
            .map(|p| {
                format!(
                    "{REJECTS_DIR}/{}",
                    p.file_name().unwrap_or_default().to_string_lossy()
                )
            })
            .collect();
        files.extend(reject_names.iter().cloned());
        let marker = pending_list(self.run_id);
        let prepared = self.obsolete(&files).and_then(|obsolete| {
            let pending = Pending {
                run_id: self.run_id.to_string(),
                files: files.clone(),
                obsolete: obsolete.clone(),
            };
            remote.put(&marker, serde_json::to_vec_pretty(&pending)?)?;
            Ok(obsolete)
        });
        let obsolete = match prepared {
            Ok(o) => o,
            Err(e) => {
                abort_all(uploads.into_iter().map(|(_, u)| u));
                return Err(e);
            }
        };
        // Until the record is written, a failure takes back everything of this run.
        let roll_back = |e: anyhow::Error| {
            let mut paths: Vec<ObjPath> = files.iter().map(|f| remote.path(f)).collect();
            paths.push(remote.path(&marker));
            let _ = remote.delete(paths);
            e.context("nothing of this run was published")
        };

        if let Some((path, e)) = complete_all(uploads.into_iter().map(|(_, u)| u)) {
            return Err(roll_back(remote.explain(e, &path)));
        }
        for (local, rel) in self.rejects.iter().zip(&reject_names) {
            let sent = fs_err::read(local)
                .map_err(anyhow::Error::from)
                .and_then(|data| remote.put(rel, data));
            if let Err(e) = sent {
                return Err(roll_back(e));
            }
        }
        let written = remote
            .read(RUN_RECORD)
            .map(|prev| prev.map(|b| String::from_utf8_lossy(&b).into_owned()))
            .and_then(|prev| record.render(prev.as_deref()))
            .and_then(|text| remote.put(RUN_RECORD, text.into_bytes()));
        if let Err(e) = written {
            return Err(roll_back(e));
        }

        // Committed.
        remote.delete(obsolete.iter().map(|f| remote.path(f)).collect())?;
        remote.delete(vec![remote.path(&marker)])?;
        Ok(())
    }

    /// Files of earlier runs in the folders this run writes, which it replaces (none with
    /// `--append`).
    fn obsolete(&self, files: &[String]) -> Result<Vec<String>> {
        if self.append {
            return Ok(Vec::new());
        }
        let mut tops: Vec<&str> = files.iter().filter_map(|f| f.split('/').next()).collect();
        tops.sort();
        tops.dedup();
        let keep: std::collections::HashSet<&str> = files.iter().map(String::as_str).collect();
        let mut old = Vec::new();
        for top in tops {
            for meta in self.remote.list(top)? {
                let rel = self.rel(&meta.location);
                if !keep.contains(rel.as_str()) {
                    old.push(rel);
                }
            }
        }
        Ok(old)
    }
}

/// Before a run: takes away what runs killed while publishing left visible (see the module
/// documentation).
pub fn clean_remote(remote: &Remote) -> Result<()> {
    let listing = block_on(remote.store.list_with_delimiter(Some(&remote.prefix)))
        .map_err(|e| remote.explain(e, &remote.prefix))?;
    let markers: Vec<_> = listing
        .objects
        .into_iter()
        .filter(|m| m.location.filename().is_some_and(is_pending_list))
        .collect();
    if markers.is_empty() {
        return Ok(());
    }
    let published = remote
        .read(RUN_RECORD)?
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("run_id").and_then(|r| r.as_str()).map(str::to_string));
    for m in markers {
        let name = m.location.filename().unwrap_or_default().to_string();
        let Some(bytes) = remote.read(&name)? else {
            continue;
        };
        let Ok(p) = serde_json::from_slice::<Pending>(&bytes) else {
            continue;
        };
        // Published: finish its replacing. Not: take its files away.
        let delete = match published.as_deref() == Some(p.run_id.as_str()) {
            true => &p.obsolete,
            false => &p.files,
        };
        remote.delete(delete.iter().map(|f| remote.path(f)).collect())?;
        remote.delete(vec![m.location])?;
    }
    Ok(())
}
