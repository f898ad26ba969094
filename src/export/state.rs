//! The job's state kept in `OUT/_export/` (so `--resume` continues it), the sign-in it was started with, the progress said on a terminal, and what an earlier run recorded.

use super::spool::ExportDir;
use crate::dataset::layout;
use crate::store::Location;
use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::PathBuf;

/// The sign-in settings of an export, kept in its state for `--resume`: the client id, the
/// key file's path, the kid, the scope, the name of the secret's environment variable.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SignIn {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_env: Option<String>,
}

/// The job, kept in `OUT/_export/state.json` while it runs.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct State {
    pub(super) base: String,
    pub(super) job: String,
    pub(super) kicked_off: String,
    /// Finished downloads: the manifest's output entry (its position over all pages) and the
    /// name of its copy.
    #[serde(default)]
    pub(super) done: std::collections::BTreeMap<usize, String>,
    #[serde(default)]
    pub(super) sign_in: SignIn,
    /// The FHIR release the server's CapabilityStatement named at kick-off (`None`: it named
    /// none, or the job was kicked off by an older version of fhir2parquet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) fhir_version: Option<String>,
}

pub(super) const STATE: &str = "state.json";

/// The state of the export being run or resumed, kept in OUT/_export/ at every change.
pub(super) struct Progress {
    pub(super) dir: ExportDir,
    pub(super) state: std::sync::Mutex<State>,
}

impl Progress {
    pub(super) fn save(&self, s: &State) -> Result<()> {
        self.dir.write(STATE, &serde_json::to_vec_pretty(s)?)
    }

    pub(super) fn done(&self, entry: usize, name: String) {
        let mut s = self.state.lock().expect("no panic");
        s.done.insert(entry, name);
        let _ = self.save(&s);
    }
}

/// `--since auto`: the `transactionTime` of the last export recorded in OUT's run record (that
/// run's own, or the latest of its `previous_runs`).
pub fn last_transaction_time(out: &Location) -> Result<String> {
    let record = match out {
        Location::Local(dir) => fs_err::read(dir.join(layout::RUN_RECORD)).ok(),
        Location::Remote(r) => r.read(layout::RUN_RECORD)?.map(|b| b.to_vec()),
    };
    let record: Option<Value> = record.and_then(|b| serde_json::from_slice(&b).ok());
    let time = record.as_ref().and_then(|r| {
        std::iter::once(r)
            .chain(r["previous_runs"].as_array().into_iter().flatten().rev())
            .find_map(|run| run["export"]["transactionTime"].as_str())
            .map(str::to_string)
    });
    time.ok_or_else(|| {
        anyhow!(
            "--since auto: {} records no earlier export (its run record names no \
             transactionTime): export without --since first, or give --since INSTANT",
            out.display()
        )
    })
}

/// The export kept in OUT to resume: its server's base URL and how the client signed in.
pub fn resumable(out: &Location) -> Result<(String, SignIn)> {
    let dir = ExportDir::under(out, layout::EXPORT_DIR);
    let state = dir
        .read(STATE)?
        .ok_or_else(|| anyhow!("no export to resume: {} is missing", dir.display(STATE)))?;
    let state: State = serde_json::from_slice(&state)
        .with_context(|| format!("{} is damaged", dir.display(STATE)))?;
    Ok((state.base, state.sign_in))
}

/// The command that resumes the export kept in OUT (its sign-in is kept with it).
pub(super) fn resume_command(out: &Location) -> String {
    format!("fhir2parquet export --resume -o {}", out.display())
}

/// The run id of OUT's last run when it published the export of `job`.
pub(super) fn published_run(out: &Location, job: &str) -> Option<String> {
    let record = match out {
        Location::Local(dir) => fs_err::read(dir.join(layout::RUN_RECORD)).ok()?,
        Location::Remote(r) => r.read(layout::RUN_RECORD).ok()??.to_vec(),
    };
    let record: Value = serde_json::from_slice(&record).ok()?;
    (record["export"]["job"].as_str() == Some(job))
        .then(|| record["run_id"].as_str().unwrap_or_default().to_string())
}
