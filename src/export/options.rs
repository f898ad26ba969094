//! What to export and how to reach the server.

use super::auth::Auth;
use super::state::SignIn;
use std::path::PathBuf;
use std::time::Duration;

/// Which `$export` operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Level {
    /// `[base]/$export`
    System,
    /// `[base]/Patient/$export`
    Patient,
    /// `[base]/Group/[id]/$export`
    Group(String),
}

/// What to export and how to reach the server.
pub struct ExportOptions {
    pub base: String,
    pub level: Level,
    /// `_type`
    pub types: Vec<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub type_filters: Vec<String>,
    pub elements: Vec<String>,
    /// More parameters, `name=value`.
    pub params: Vec<(String, String)>,
    /// Kick off with POST and a Parameters body instead of GET.
    pub post: bool,
    /// `_type` repeated per type instead of one comma-joined value.
    pub type_repeat: bool,
    pub auth: Option<Auth>,
    pub keep_job: bool,
    pub resume: bool,
    /// The longest wait between two status requests, whatever the server asks.
    pub max_poll: Duration,
    pub progress: bool,
    /// Keep the downloads (gzipped NDJSON) here instead of only until the export is published.
    pub keep_ndjson: Option<PathBuf>,
    /// Publish what came when the manifest's error files report failures (the run record and
    /// the exit code say the dataset is partial); without it such an export fails.
    pub allow_partial: bool,
    /// Delete an unfinished export kept in OUT (on the server too) and start a new one;
    /// without it a new export into such a folder is refused.
    pub restart: bool,
    /// How the client signed in, kept with the job (never the key or secret itself) so that
    /// `--resume` needs nothing but OUT.
    pub sign_in: SignIn,
    /// No notes on stderr (retries, waits).
    pub quiet: bool,
}
