//! `export`: a FHIR Bulk Data `$export` client (Bulk Data Access IG 2.0) that streams the
//! server's files straight into the convert pipeline: kick-off, status polling, the manifest,
//! downloads as [`Source`]s (several at once), then the job deleted. The job URL and the
//! finished downloads are kept in `OUT/_export/` (see [`spool`]), so `--resume` continues a job
//! after a crash and fetches only the files it does not have.

pub mod auth;
mod spool;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use reqwest::{header, Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::convert::{ConvertOptions, RunRecord};
use crate::input::{Opener, Source};
use crate::store::{block_on, Location, StreamReader};
use auth::Auth;
pub use spool::ExportDir;
use spool::{Spool, Tee};

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
}

/// The job, kept in `OUT/_export/state.json` while it runs.
#[derive(Debug, Serialize, Deserialize)]
struct State {
    base: String,
    job: String,
    kicked_off: String,
    /// Finished downloads: the manifest's output entry (its position over all pages) and the
    /// name of its copy.
    #[serde(default)]
    done: std::collections::BTreeMap<usize, String>,
}

const STATE: &str = "state.json";

/// The state of the export being run or resumed, kept in OUT/_export/ at every change.
struct Progress {
    dir: ExportDir,
    state: std::sync::Mutex<State>,
}

impl Progress {
    fn save(&self, s: &State) -> Result<()> {
        self.dir.write(STATE, &serde_json::to_vec_pretty(s)?)
    }

    fn done(&self, entry: usize, name: String) {
        let mut s = self.state.lock().expect("no panic");
        s.done.insert(entry, name);
        let _ = self.save(&s);
    }
}

/// `--since auto`: the `transactionTime` of the last export recorded in OUT's run record (that
/// run's own, or the latest of its `previous_runs`).
pub fn last_transaction_time(out: &Location) -> Result<String> {
    let record = match out {
        Location::Local(dir) => fs_err::read(dir.join(crate::convert::RUN_RECORD)).ok(),
        Location::Remote(r) => r.read(crate::convert::RUN_RECORD)?.map(|b| b.to_vec()),
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

/// The base URL of the export kept in OUT, to resume it.
pub fn resumable_base(out: &Location) -> Result<String> {
    let dir = ExportDir::under(out, "_export");
    let state = dir
        .read(STATE)?
        .ok_or_else(|| anyhow!("no export to resume: {} is missing", dir.display(STATE)))?;
    Ok(serde_json::from_slice::<State>(&state)?.base)
}

/// A status request is answered within these bounds, whatever Retry-After says (servers send
/// milliseconds, epoch times, hours).
const MIN_POLL: Duration = Duration::from_millis(500);
/// Attempts of one request that fails with 429, 5xx or a dropped connection.
const ATTEMPTS: u32 = 8;

/// `Retry-After` as seconds or as an HTTP date (RFC 9110 10.2.3), clamped to
/// [`MIN_POLL`]..=`max`.
pub fn retry_after(value: Option<&str>, max: Duration) -> Option<Duration> {
    let v = value?.trim();
    let d = if let Ok(secs) = v.parse::<f64>() {
        Duration::from_secs_f64(secs.max(0.0).min(max.as_secs_f64()))
    } else {
        let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
        let secs = (when.timestamp() - chrono::Utc::now().timestamp()).max(0) as u64;
        Duration::from_secs(secs)
    };
    Some(d.clamp(MIN_POLL, max.max(MIN_POLL)))
}

/// The diagnostics of an OperationOutcome (never resource data: codes and the server's text).
fn outcome_text(body: &Value) -> String {
    let issues = body["issue"].as_array().cloned().unwrap_or_default();
    let parts: Vec<String> = issues
        .iter()
        .map(|i| {
            let text = i["diagnostics"]
                .as_str()
                .or(i["details"]["text"].as_str())
                .unwrap_or("");
            format!(
                "{} {}: {text}",
                i["severity"].as_str().unwrap_or("error"),
                i["code"].as_str().unwrap_or("unknown")
            )
        })
        .collect();
    match parts.is_empty() {
        true => "no OperationOutcome".into(),
        false => parts.join("; "),
    }
}

fn is_transient(body: &Value) -> bool {
    body["issue"]
        .as_array()
        .is_some_and(|is| !is.is_empty() && is.iter().all(|i| i["code"] == "transient"))
}

/// `OUT/_export/log.ndjson`: one event per line, in the form bulk-data-client writes
/// (`exportId`, `timestamp` in ms, `eventId`, `eventDetail`), so existing tooling reads it.
/// On a store the log is written whole at milestones (an object cannot be appended to).
#[derive(Clone)]
struct EventLog {
    dir: ExportDir,
    export_id: Arc<std::sync::Mutex<String>>,
    lines: Arc<std::sync::Mutex<String>>,
}

const LOG: &str = "log.ndjson";

impl EventLog {
    fn new(dir: ExportDir) -> Self {
        // On a store the whole log is rewritten, so a resumed export starts from the one it
        // has; a local log is appended to and never held in memory.
        let before = match &dir {
            ExportDir::Remote(..) => dir.read(LOG).ok().flatten().unwrap_or_default(),
            ExportDir::Local(_) => Vec::new(),
        };
        EventLog {
            dir,
            export_id: Default::default(),
            lines: Arc::new(std::sync::Mutex::new(
                String::from_utf8_lossy(&before).into_owned(),
            )),
        }
    }

    fn log(&self, event: &str, detail: Value) {
        let line = serde_json::json!({
            "exportId": self.export_id.lock().expect("no panic").clone(),
            "timestamp": chrono::Utc::now().timestamp_millis(),
            "eventId": event,
            "eventDetail": detail,
        });
        // One event at a time: downloads log from several threads, and a local line must not
        // be interleaved with another.
        let mut lines = self.lines.lock().expect("no panic");
        match &self.dir {
            ExportDir::Remote(..) => lines.push_str(&format!("{line}\n")),
            ExportDir::Local(d) => {
                let append = || -> std::io::Result<()> {
                    fs_err::create_dir_all(d)?;
                    let mut f = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(d.join(LOG))?;
                    use std::io::Write;
                    writeln!(f, "{line}")
                };
                let _ = append();
            }
        }
    }

    /// Writes the log whole (stores only; a local log is appended line by line).
    fn flush(&self) {
        if let ExportDir::Remote(..) = &self.dir {
            let lines = self.lines.lock().expect("no panic").clone();
            let _ = self.dir.write(LOG, lines.as_bytes());
        }
    }
}

/// The HTTP side: one client, the token when there is one.
struct Client {
    http: reqwest::Client,
    auth: Option<Auth>,
    max_poll: Duration,
}

impl Client {
    /// Sends a request, with the access token when `with_token`, again on 429, 5xx and dropped
    /// connections (backoff, or Retry-After), and once with a new token on a 401.
    async fn send(
        &self,
        method: Method,
        url: &str,
        with_token: bool,
        build: &(dyn Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder + Sync),
    ) -> Result<reqwest::Response> {
        let mut backoff = Duration::from_millis(500);
        let mut renewed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = build(self.http.request(method.clone(), url));
            if with_token {
                if let Some(a) = &self.auth {
                    req = req.bearer_auth(a.token(&self.http).await?);
                }
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) if attempt < ATTEMPTS => {
                    let _ = e;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.max_poll);
                    continue;
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e.without_url()))
                        .with_context(|| format!("{}: the server did not answer", strip(url)))
                }
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && with_token && !renewed {
                if let Some(a) = &self.auth {
                    a.forget();
                    renewed = true;
                    continue;
                }
            }
            let retry = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
            if retry && attempt < ATTEMPTS {
                let wait = retry_after(
                    resp.headers()
                        .get(header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok()),
                    self.max_poll,
                );
                // A 5xx with an OperationOutcome that is not transient is the job's failure.
                if status.is_server_error() {
                    let body: Value =
                        serde_json::from_slice(&resp.bytes().await.unwrap_or_default())
                            .unwrap_or_default();
                    if body["resourceType"] == "OperationOutcome" && !is_transient(&body) {
                        bail!("{}: {status}: {}", strip(url), outcome_text(&body));
                    }
                }
                tokio::time::sleep(wait.unwrap_or(backoff)).await;
                backoff = (backoff * 2).min(self.max_poll);
                continue;
            }
            return Ok(resp);
        }
    }
}

/// A URL without its query (signed file URLs carry credentials there).
fn strip(url: &str) -> String {
    crate::store::redact(url)
}

fn kickoff_url(o: &ExportOptions) -> String {
    let base = o.base.trim_end_matches('/');
    match &o.level {
        Level::System => format!("{base}/$export"),
        Level::Patient => format!("{base}/Patient/$export"),
        Level::Group(id) => format!("{base}/Group/{id}/$export"),
    }
}

/// The kick-off parameters, in order.
fn parameters(o: &ExportOptions) -> Vec<(String, String)> {
    let mut p = vec![(
        "_outputFormat".to_string(),
        "application/fhir+ndjson".to_string(),
    )];
    if !o.types.is_empty() {
        match o.type_repeat {
            true => p.extend(o.types.iter().map(|t| ("_type".to_string(), t.clone()))),
            false => p.push(("_type".into(), o.types.join(","))),
        }
    }
    for (k, v) in [("_since", &o.since), ("_until", &o.until)] {
        if let Some(v) = v {
            p.push((k.into(), v.clone()));
        }
    }
    p.extend(
        o.type_filters
            .iter()
            .map(|f| ("_typeFilter".to_string(), f.clone())),
    );
    if !o.elements.is_empty() {
        p.push(("_elements".into(), o.elements.join(",")));
    }
    p.extend(o.params.iter().cloned());
    p
}

/// The kick-off request as a FHIR Parameters resource (for POST).
fn parameters_resource(params: &[(String, String)]) -> Value {
    let parameter: Vec<Value> = params
        .iter()
        .map(|(k, v)| {
            let value = match k.as_str() {
                "_since" | "_until" => "valueInstant",
                "includeAssociatedData" => "valueCode",
                "patient" => {
                    return serde_json::json!({"name": k, "valueReference": {"reference": v}})
                }
                _ => "valueString",
            };
            serde_json::json!({"name": k, value: v})
        })
        .collect();
    serde_json::json!({"resourceType": "Parameters", "parameter": parameter})
}

async fn kick_off(c: &Client, o: &ExportOptions) -> Result<String> {
    let url = kickoff_url(o);
    let params = parameters(o);
    let resp = if o.post {
        let body = serde_json::to_vec(&parameters_resource(&params))?;
        c.send(Method::POST, &url, true, &|r| {
            r.header(header::ACCEPT, "application/fhir+json")
                .header("Prefer", "respond-async")
                .header(header::CONTENT_TYPE, "application/fhir+json")
                .body(body.clone())
        })
        .await?
    } else {
        c.send(Method::GET, &url, true, &|r| {
            r.header(header::ACCEPT, "application/fhir+json")
                .header("Prefer", "respond-async")
                .query(&params)
        })
        .await?
    };
    let status = resp.status();
    let location = resp
        .headers()
        .get(header::CONTENT_LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if status != StatusCode::ACCEPTED {
        let body: Value = serde_json::from_slice(&resp.bytes().await?).unwrap_or_default();
        bail!(
            "{url}: the kick-off was refused ({status}): {}",
            outcome_text(&body)
        );
    }
    location.ok_or_else(|| anyhow!("{url}: 202 without a Content-Location (the status URL)"))
}

/// Polls the status URL until the manifest is ready.
async fn poll(
    c: &Client,
    job: &str,
    bar: &indicatif::ProgressBar,
    log: &EventLog,
) -> Result<Value> {
    let mut backoff = Duration::from_secs(1);
    loop {
        let resp = c
            .send(Method::GET, job, true, &|r| {
                r.header(header::ACCEPT, "application/json")
            })
            .await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await?;
        match status {
            StatusCode::OK => {
                return serde_json::from_slice(&body)
                    .with_context(|| format!("{}: the manifest is not JSON", strip(job)))
            }
            StatusCode::ACCEPTED => {
                let progress = headers.get("X-Progress").and_then(|v| v.to_str().ok());
                if let Some(p) = progress {
                    bar.set_message(format!("export: {p}"));
                }
                log.log(
                    "status_progress",
                    serde_json::json!({
                        "xProgress": progress,
                        "retryAfter": headers.get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()),
                    }),
                );
                let wait = retry_after(
                    headers
                        .get(header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok()),
                    c.max_poll,
                );
                tokio::time::sleep(wait.unwrap_or(backoff)).await;
                backoff = (backoff * 2).min(c.max_poll);
            }
            s => {
                let outcome: Value = serde_json::from_slice(&body).unwrap_or_default();
                if is_transient(&outcome) {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(c.max_poll);
                    continue;
                }
                bail!(
                    "{}: the export failed ({s}): {}",
                    strip(job),
                    outcome_text(&outcome)
                );
            }
        }
    }
}

/// The manifest's entries of one kind over every page (`link` with relation `next`).
async fn all_pages(c: &Client, first: Value) -> Result<Vec<Value>> {
    let mut pages = vec![first];
    loop {
        let next = pages.last().and_then(|p| {
            p["link"].as_array().and_then(|ls| {
                ls.iter()
                    .find(|l| l["relation"] == "next")
                    .and_then(|l| l["url"].as_str().map(str::to_string))
            })
        });
        let Some(url) = next else {
            return Ok(pages);
        };
        let resp = c
            .send(Method::GET, &url, true, &|r| {
                r.header(header::ACCEPT, "application/json")
            })
            .await?;
        if !resp.status().is_success() {
            bail!("{}: a manifest page: {}", strip(&url), resp.status());
        }
        pages.push(serde_json::from_slice(&resp.bytes().await?)?);
    }
}

/// One manifest output entry to download.
struct Download {
    client: Arc<Client>,
    /// The status URL, asked again for fresh links when a file link has expired.
    job: String,
    /// The entry's position in `output` over all manifest pages.
    entry: usize,
    with_token: bool,
    item: String,
    log: EventLog,
    /// Where the copy goes.
    copies: ExportDir,
    progress: Arc<Progress>,
}

impl Download {
    /// The copy's name: `<type>-<entry>.ndjson.gz`.
    fn name(&self) -> String {
        let t: String = self
            .item
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        format!("{t}-{}.ndjson.gz", self.entry)
    }

    async fn get(&self, url: &str) -> Result<reqwest::Response> {
        self.client
            .send(Method::GET, url, self.with_token, &|r| {
                r.header(header::ACCEPT, "application/fhir+ndjson")
                    .header(header::ACCEPT_ENCODING, "gzip")
            })
            .await
    }

    /// The file, asking the status URL for a new link once if this one has expired.
    async fn fetch(&self, url: &str) -> Result<reqwest::Response> {
        let resp = self.get(url).await?;
        let expired = [
            StatusCode::UNAUTHORIZED,
            StatusCode::FORBIDDEN,
            StatusCode::NOT_FOUND,
            StatusCode::GONE,
        ]
        .contains(&resp.status());
        if !expired {
            return Ok(resp);
        }
        // Signed file links expire (a 403 from S3-style storage, 404 or 410 elsewhere); the
        // status URL answers with the manifest, and fresh links, until the job is deleted
        // (export.html, "Bulk Data Status Request": complete status).
        self.log.log(
            "download_error",
            serde_json::json!({"fileUrl": strip(url), "status": resp.status().as_u16(), "action": "refetching the manifest"}),
        );
        match self.fresh_link().await {
            Some(fresh) if fresh != url => self.get(&fresh).await,
            _ => Ok(resp),
        }
    }

    async fn fresh_link(&self) -> Option<String> {
        let c = &self.client;
        let resp = c
            .send(Method::GET, &self.job, true, &|r| {
                r.header(header::ACCEPT, "application/json")
            })
            .await
            .ok()?;
        if resp.status() != StatusCode::OK {
            return None;
        }
        let first: Value = serde_json::from_slice(&resp.bytes().await.ok()?).ok()?;
        let pages = all_pages(c, first).await.ok()?;
        let outputs: Vec<&Value> = pages
            .iter()
            .flat_map(|p| p["output"].as_array().into_iter().flatten())
            .collect();
        outputs.get(self.entry)?["url"].as_str().map(str::to_string)
    }
}

/// Opens a download as it streams, copying it into OUT/_export/files (or `--keep-ndjson`).
fn opener(d: Arc<Download>, url: String) -> Opener {
    Opener(Arc::new(move || {
        d.log.log(
            "download_request",
            serde_json::json!({"fileUrl": strip(&url), "itemType": d.item}),
        );
        let resp = block_on(d.fetch(&url)).map_err(|e| std::io::Error::other(format!("{e:#}")))?;
        if !resp.status().is_success() {
            return Err(std::io::Error::other(format!(
                "{}: {}",
                strip(&url),
                resp.status()
            )));
        }
        let gzip = resp
            .headers()
            .get(header::CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        let stream = resp
            .bytes_stream()
            .map(|r| r.map_err(|e| std::io::Error::other(e.without_url())));
        let download = StreamReader::new(stream.boxed());
        let name = d.name();
        let copy: Spool = d
            .copies
            .spool(&name)
            .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
        let (progress, entry) = (d.progress.clone(), d.entry);
        let tee = Tee::new(
            download,
            copy,
            gzip,
            Box::new(move || progress.done(entry, name)),
        );
        Ok(match gzip {
            true => Box::new(flate2::read::MultiGzDecoder::new(tee)) as Box<dyn std::io::Read>,
            false => Box::new(tee),
        })
    }))
}

/// Opens a download finished by an earlier attempt of the export.
fn kept(copies: ExportDir, name: String) -> Opener {
    Opener(Arc::new(move || {
        copies
            .open(&name)
            .map(|r| Box::new(r) as Box<dyn std::io::Read>)
    }))
}

/// Saves the manifest's error (`outcome`) and `deleted` files into OUT/_export/.
async fn save_extra(
    c: &Client,
    entries: &[(String, &Value, bool)],
    dir: &ExportDir,
) -> Result<(u64, Vec<(String, String)>)> {
    let mut lines = 0;
    let mut deleted = Vec::new();
    for (i, (kind, e, with_token)) in entries.iter().enumerate() {
        let Some(url) = e["url"].as_str() else {
            continue;
        };
        let resp = c
            .send(Method::GET, url, *with_token, &|r| {
                r.header(header::ACCEPT, "application/fhir+ndjson")
            })
            .await?;
        if !resp.status().is_success() {
            bail!("{}: {}", strip(url), resp.status());
        }
        let body = resp.bytes().await?;
        lines += body
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count() as u64;
        if kind == "deleted" {
            deleted.extend(deleted_entries(&body));
        }
        dir.write(&format!("{kind}-{i}.ndjson"), &body)?;
    }
    Ok((lines, deleted))
}

/// The (type, id) of each DELETE in the transaction Bundles of a `deleted` file.
fn deleted_entries(ndjson: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in ndjson.split(|b| *b == b'\n') {
        let Ok(bundle) = serde_json::from_slice::<Value>(line) else {
            continue;
        };
        for e in bundle["entry"].as_array().into_iter().flatten() {
            if e["request"]["method"] != "DELETE" {
                continue;
            }
            let url = e["request"]["url"].as_str().unwrap_or_default();
            let mut parts = url.trim_start_matches('/').rsplitn(2, '/');
            if let (Some(id), Some(t)) = (parts.next(), parts.next()) {
                let t = t.rsplit('/').next().unwrap_or(t);
                out.push((t.to_string(), id.to_string()));
            }
        }
    }
    out
}

/// `OUT/_deleted/deleted-<transactionTime>.parquet`: type, id, transactionTime of each resource
/// the server reports deleted, so an incremental load can apply them.
fn write_deleted(dir: &ExportDir, rows: &[(String, String)], when: &str) -> Result<()> {
    use arrow::array::{ArrayRef, RecordBatch, StringArray};
    if rows.is_empty() {
        return Ok(());
    }
    let cols: Vec<(&str, ArrayRef)> = vec![
        (
            "type",
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.0.as_str()),
            )),
        ),
        (
            "id",
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.1.as_str()),
            )),
        ),
        (
            "transactionTime",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|_| when))),
        ),
    ];
    let batch = RecordBatch::try_from_iter(cols)?;
    let name: String = when
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let mut w = parquet::arrow::ArrowWriter::try_new(Vec::new(), batch.schema(), None)?;
    w.write(&batch)?;
    let bytes = w.into_inner()?;
    dir.write(&format!("deleted-{name}.parquet"), &bytes)
}

/// What Ctrl-C prints: how to go on (set once, before the handler is installed).
static INTERRUPTED: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

/// On Ctrl-C (SIGINT), tells the user how to resume before exiting with 130: the job and the
/// finished downloads are in OUT/_export/, nothing of the run is published.
fn note_how_to_resume_on_interrupt(out: &Location) {
    extern "C" fn on_interrupt(_: libc::c_int) {
        if let Some(msg) = INTERRUPTED.get() {
            // SAFETY: write(2) and _exit(2) are async-signal-safe; the message was set before
            // the handler was installed and is never changed.
            unsafe {
                libc::write(2, msg.as_ptr().cast(), msg.len());
            }
        }
        unsafe { libc::_exit(130) }
    }
    let msg = format!(
        "\ninterrupted: the job and the finished downloads are kept; run `fhir2parquet export \
         --resume -o {}` to go on\n",
        out.display()
    );
    if INTERRUPTED.set(msg.into_bytes()).is_ok() {
        // SAFETY: installs a handler that only calls async-signal-safe functions.
        unsafe {
            libc::signal(
                libc::SIGINT,
                on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

/// Runs an export into `convert.out`; returns the run record.
pub fn run(o: ExportOptions, convert: &ConvertOptions) -> Result<RunRecord> {
    note_how_to_resume_on_interrupt(&convert.out);
    let dir = ExportDir::under(&convert.out, "_export");
    let client = Arc::new(Client {
        http: reqwest::Client::builder()
            .user_agent(concat!("fhir2parquet/", env!("CARGO_PKG_VERSION")))
            .build()?,
        auth: o.auth,
        max_poll: o.max_poll,
    });
    let bar = match o.progress {
        true => indicatif::ProgressBar::new_spinner(),
        false => indicatif::ProgressBar::hidden(),
    };
    let o = ExportOptions { auth: None, ..o };
    let log = EventLog::new(dir.clone());
    let state = match o.resume {
        true => {
            let kept = dir
                .read(STATE)?
                .ok_or_else(|| anyhow!("no export to resume: {} is missing", dir.display(STATE)))?;
            serde_json::from_slice::<State>(&kept)
                .with_context(|| format!("{} is damaged", dir.display(STATE)))?
        }
        false => {
            let job = block_on(kick_off(&client, &o));
            log.log(
                "kickoff",
                serde_json::json!({
                    "exportUrl": kickoff_url(&o),
                    "errorCode": null,
                    "errorBody": job.as_ref().err().map(|e| format!("{e:#}")),
                    "requestParameters": parameters(&o).into_iter().collect::<std::collections::BTreeMap<_, _>>(),
                }),
            );
            log.flush();
            State {
                base: o.base.clone(),
                job: job?,
                kicked_off: chrono::Utc::now().to_rfc3339(),
                done: Default::default(),
            }
        }
    };
    let job = state.job.clone();
    let progress = Arc::new(Progress {
        dir: dir.clone(),
        state: std::sync::Mutex::new(state),
    });
    progress.save(&progress.state.lock().expect("no panic"))?;
    *log.export_id.lock().expect("no panic") = strip(&job);
    let manifest = block_on(poll(&client, &job, &bar, &log))?;
    bar.finish_and_clear();
    let count = |m: &Value, k: &str| m[k].as_array().map_or(0, Vec::len);
    log.log(
        "status_complete",
        serde_json::json!({
            "transactionTime": manifest["transactionTime"],
            "outputFileCount": count(&manifest, "output"),
            "deletedFileCount": count(&manifest, "deleted"),
            "errorFileCount": count(&manifest, "error") + count(&manifest, "outcome"),
        }),
    );
    let pages = block_on(all_pages(&client, manifest.clone()))?;
    log.log(
        "manifest_complete",
        serde_json::json!({
            "transactionTime": manifest["transactionTime"],
            "totalOutputFileCount": pages.iter().map(|p| count(p, "output")).sum::<usize>(),
            "totalDeletedFileCount": pages.iter().map(|p| count(p, "deleted")).sum::<usize>(),
            "totalErrorFileCount": pages.iter().map(|p| count(p, "error") + count(p, "outcome")).sum::<usize>(),
            "totalManifests": pages.len(),
        }),
    );
    log.flush();
    let token_for_files = manifest["requiresAccessToken"].as_bool().unwrap_or(false);

    // Downloads are copied here while they stream, so a resumed export need not fetch them
    // again; without --keep-ndjson the copies go once the export is published.
    let copies = match &o.keep_ndjson {
        Some(d) => ExportDir::Local(d.clone()),
        None => ExportDir::under(&convert.out, "_export/files"),
    };
    let done = progress.state.lock().expect("no panic").done.clone();
    let mut sources = Vec::new();
    let mut extra = Vec::new();
    let mut reused = 0;
    for page in &pages {
        for e in page["output"].as_array().into_iter().flatten() {
            let url = e["url"]
                .as_str()
                .ok_or_else(|| anyhow!("a manifest output entry has no url"))?;
            let entry = sources.len();
            let name = strip(url);
            let count = e["count"].as_u64();
            let download = Arc::new(Download {
                client: client.clone(),
                job: job.clone(),
                entry,
                with_token: token_for_files,
                item: e["type"].as_str().unwrap_or_default().to_string(),
                log: log.clone(),
                copies: copies.clone(),
                progress: progress.clone(),
            });
            let open = match done.get(&entry) {
                Some(copy) if *copy == download.name() && copies.exists(copy) => {
                    reused += 1;
                    kept(copies.clone(), copy.clone())
                }
                _ => opener(download, url.to_string()),
            };
            sources.push(Source::stream(&name, false, count, open));
        }
        // 2.0 names it `error`; the 4.0 ballot `outcome`.
        for key in ["error", "outcome"] {
            for e in page[key].as_array().into_iter().flatten() {
                extra.push(("outcome".to_string(), e, token_for_files));
            }
        }
        for e in page["deleted"].as_array().into_iter().flatten() {
            extra.push(("deleted".to_string(), e, token_for_files));
        }
    }
    if reused > 0 {
        log.log(
            "resume",
            serde_json::json!({"filesKept": reused, "filesToDownload": sources.len() - reused}),
        );
    }
    let (extra_lines, deleted) = block_on(save_extra(&client, &extra, &dir))?;
    write_deleted(
        &ExportDir::under(&convert.out, "_deleted"),
        &deleted,
        manifest["transactionTime"].as_str().unwrap_or_default(),
    )?;

    let mut convert = convert.clone();
    // A download that fails stops the run before anything is published: what was fetched is
    // kept for --resume.
    convert.strict_inputs = true;
    convert.export = Some(serde_json::json!({
        "server": o.base,
        "request": manifest["request"],
        "transactionTime": manifest["transactionTime"],
        "files": sources.len(),
        "outcome_and_deleted_lines": extra_lines,
        "deleted_resources": deleted.len(),
    }));
    // A merge reads its input twice (its plan, then the conversion): every file is downloaded
    // (and kept, as for --resume) first, then read from its copy.
    if convert.merge {
        for s in &sources {
            if let Some(open) = &s.opener {
                let mut r =
                    (open.0)().with_context(|| format!("cannot download {}", s.display()))?;
                std::io::copy(&mut r, &mut std::io::sink())
                    .with_context(|| format!("cannot download {}", s.display()))?;
            }
        }
        let done = progress.state.lock().expect("no panic").done.clone();
        for (entry, s) in sources.iter_mut().enumerate() {
            if let Some(copy) = done.get(&entry) {
                s.opener = Some(kept(copies.clone(), copy.clone()));
            }
        }
    }
    let deletes: Vec<crate::convert::merge::Delete> = deleted
        .iter()
        .map(|(t, id)| crate::convert::merge::Delete {
            resource_type: t.clone(),
            id: id.clone(),
            when: None,
        })
        .collect();
    let record = crate::convert::run_merge(&sources, &convert, &deletes).map_err(|e| {
        log.log("export_error", serde_json::json!({"message": format!("{e:#}")}));
        log.flush();
        let kept = progress.state.lock().expect("no panic").done.len();
        e.context(format!(
            "the export stopped; {kept} of {} files are kept: run `fhir2parquet export --resume -o {}` to go on",
            sources.len(),
            convert.out.display()
        ))
    })?;
    let rows: u64 = record.types.values().map(|t| t.rows).sum();
    log.log(
        "export_complete",
        serde_json::json!({
            "files": sources.len(),
            "resources": rows,
            "bytes": record.inputs.iter().map(|i| i.size).sum::<u64>(),
            "duration": (record.seconds * 1000.0) as u64,
        }),
    );
    log.flush();
    if !o.keep_job {
        let _ = block_on(client.send(Method::DELETE, &job, true, &|r| r));
    }
    dir.remove(STATE);
    if o.keep_ndjson.is_none() {
        copies.remove_all();
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms_are_clamped() {
        let max = Duration::from_secs(60);
        assert_eq!(retry_after(Some("5"), max), Some(Duration::from_secs(5)));
        assert_eq!(retry_after(Some("0"), max), Some(MIN_POLL));
        // A millisecond epoch, as a server has sent.
        assert_eq!(retry_after(Some("1700000000000"), max), Some(max));
        assert_eq!(retry_after(Some("7200"), max), Some(max));
        let soon = (chrono::Utc::now() + chrono::Duration::seconds(3)).to_rfc2822();
        let d = retry_after(Some(&soon), max).unwrap();
        assert!(
            d >= Duration::from_secs(1) && d <= Duration::from_secs(3),
            "{d:?}"
        );
        assert_eq!(retry_after(Some("soon"), max), None);
    }

    #[test]
    fn parameters_joined_or_repeated() {
        let mut o = ExportOptions {
            base: "http://x/fhir".into(),
            level: Level::Group("g1".into()),
            types: vec!["Patient".into(), "Observation".into()],
            since: Some("2020-01-01T00:00:00Z".into()),
            until: None,
            type_filters: vec![],
            elements: vec![],
            params: vec![],
            post: false,
            type_repeat: false,
            auth: None,
            keep_job: false,
            resume: false,
            max_poll: Duration::from_secs(60),
            progress: false,
            keep_ndjson: None,
        };
        assert_eq!(kickoff_url(&o), "http://x/fhir/Group/g1/$export");
        let p = parameters(&o);
        assert!(p.contains(&("_type".into(), "Patient,Observation".into())));
        o.type_repeat = true;
        let p = parameters(&o);
        assert_eq!(p.iter().filter(|(k, _)| k == "_type").count(), 2);
        let r = parameters_resource(&p);
        assert_eq!(r["resourceType"], "Parameters");
        assert!(r["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["valueInstant"] == "2020-01-01T00:00:00Z"));
    }
}
