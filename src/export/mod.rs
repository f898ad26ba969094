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
use crate::dataset::layout;
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
struct State {
    base: String,
    job: String,
    kicked_off: String,
    /// Finished downloads: the manifest's output entry (its position over all pages) and the
    /// name of its copy.
    #[serde(default)]
    done: std::collections::BTreeMap<usize, String>,
    #[serde(default)]
    sign_in: SignIn,
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
fn resume_command(out: &Location) -> String {
    format!("fhir2parquet export --resume -o {}", out.display())
}

/// The export's manifest error files, read: failures (issues of severity error or fatal)
/// and the types they name (an issue's expression or location, else a type of the request
/// named in its text).
fn server_failures(dir: &ExportDir, files: usize, types: &[String]) -> (Vec<String>, Vec<String>) {
    let mut failures = Vec::new();
    let mut named = std::collections::BTreeSet::new();
    for i in 0..files {
        let Ok(Some(body)) = dir.read(&format!("outcome-{i}.ndjson")) else {
            continue;
        };
        for line in body.split(|b| *b == b'\n') {
            let Ok(outcome) = serde_json::from_slice::<Value>(line) else {
                continue;
            };
            for issue in outcome["issue"].as_array().into_iter().flatten() {
                if !matches!(issue["severity"].as_str(), Some("error" | "fatal") | None) {
                    continue;
                }
                let text = issue["diagnostics"]
                    .as_str()
                    .or(issue["details"]["text"].as_str())
                    .unwrap_or("");
                failures.push(format!(
                    "{}: {text}",
                    issue["code"].as_str().unwrap_or("unknown")
                ));
                let paths = ["expression", "location"]
                    .iter()
                    .flat_map(|k| issue[*k].as_array().cloned().unwrap_or_default())
                    .filter_map(|p| p.as_str().map(str::to_string));
                for p in paths {
                    let t = p.split(['.', '/', '(']).next().unwrap_or_default();
                    if crate::schema::node::resource_members(t).is_some() {
                        named.insert(t.to_string());
                    }
                }
                for t in types {
                    if text
                        .split(|c: char| !c.is_ascii_alphanumeric())
                        .any(|w| w == t)
                    {
                        named.insert(t.clone());
                    }
                }
            }
        }
    }
    (failures, named.into_iter().collect())
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
        true => "an OperationOutcome with no issue".into(),
        false => parts.join("; "),
    }
}

/// What a server said in a response body, for a message: an OperationOutcome's issues, an
/// OAuth error, or its text (one line, at most 300 characters; "no message" when empty).
fn server_text(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        if v["resourceType"] == "OperationOutcome" {
            return outcome_text(&v);
        }
        if let Some(e) = v["error"].as_str() {
            return match v["error_description"].as_str() {
                Some(d) => format!("{e}: {d}"),
                None => e.to_string(),
            };
        }
    }
    let text = String::from_utf8_lossy(body);
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.chars().count() {
        0 => "no message".into(),
        n if n > 300 => format!("{}...", line.chars().take(300).collect::<String>()),
        _ => line,
    }
}

fn is_transient(body: &Value) -> bool {
    body["issue"]
        .as_array()
        .is_some_and(|is| !is.is_empty() && is.iter().all(|i| i["code"] == "transient"))
}

/// `OUT/_export/log.ndjson`: one event per line, in the form of the Bulk Data client log
/// (bulk-data-client's `log.ndjson`): `exportId` (the status URL, once there is one),
/// `timestamp` (ISO 8601), `eventId` and `eventDetail`, with its events (`kickoff`,
/// `status_progress`, `status_complete`, `status_page_complete`, `status_error`,
/// `manifest_complete`, `download_request`, `download_complete`, `download_error`,
/// `export_complete`, `export_error`) and two of ours: `request_retry` and `resume`.
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
        // Until the kick-off gives a status URL: an id of this attempt.
        let id = format!(
            "fhir2parquet-{}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ"),
            std::process::id()
        );
        EventLog {
            dir,
            export_id: Arc::new(std::sync::Mutex::new(id)),
            lines: Arc::new(std::sync::Mutex::new(
                String::from_utf8_lossy(&before).into_owned(),
            )),
        }
    }

    fn log(&self, event: &str, detail: Value) {
        let line = serde_json::json!({
            "exportId": self.export_id.lock().expect("no panic").clone(),
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
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
    log: EventLog,
    /// No retry notes on stderr.
    quiet: bool,
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
                    let why = format!("{}", e.without_url());
                    self.retrying(url, None, &why, backoff, attempt);
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
                let bytes = resp.bytes().await.unwrap_or_default();
                // A 5xx with an OperationOutcome that is not transient is the job's failure.
                if status.is_server_error() {
                    let body: Value = serde_json::from_slice(&bytes).unwrap_or_default();
                    if body["resourceType"] == "OperationOutcome" && !is_transient(&body) {
                        bail!("{}: {status}: {}", strip(url), outcome_text(&body));
                    }
                }
                let wait = wait.unwrap_or(backoff);
                let why = format!("{status}: {}", server_text(&bytes));
                self.retrying(url, Some(status.as_u16()), &why, wait, attempt);
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(self.max_poll);
                continue;
            }
            return Ok(resp);
        }
    }
}

impl Client {
    /// Says that a request is tried again, and after how long: on stderr (a long wait must not
    /// look like a hang, on a terminal or not) and in the log.
    fn retrying(&self, url: &str, code: Option<u16>, why: &str, wait: Duration, attempt: u32) {
        if !self.quiet {
            eprintln!(
                "fhir2parquet: {} failed ({why}); trying again in {:.1} s (attempt {} of {ATTEMPTS})",
                strip(url),
                wait.as_secs_f64(),
                attempt + 1
            );
        }
        self.log.log(
            "request_retry",
            serde_json::json!({
                "url": strip(url), "code": code, "message": why,
                "waitMs": wait.as_millis() as u64, "attempt": attempt + 1,
                "attempts": ATTEMPTS,
            }),
        );
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

/// Kicks the export off; logs `kickoff` (with the server's status and text when refused);
/// the status URL.
async fn kick_off(c: &Client, o: &ExportOptions) -> Result<String> {
    let url = kickoff_url(o);
    let params = parameters(o);
    let logged = |code: Option<u16>, body: Option<String>| {
        // The `patient` parameter names patients: never logged.
        let request: std::collections::BTreeMap<&str, &str> = params
            .iter()
            .filter(|(k, _)| k != "patient")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        c.log.log(
            "kickoff",
            serde_json::json!({
                "exportUrl": url,
                "errorCode": code,
                "errorBody": body,
                "requestParameters": request,
            }),
        );
        c.log.flush();
    };
    let resp = match kick_off_request(c, o, &url, &params).await {
        Ok(r) => r,
        Err(e) => {
            logged(None, Some(format!("{e:#}")));
            return Err(e);
        }
    };
    let status = resp.status();
    let location = resp
        .headers()
        .get(header::CONTENT_LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if status != StatusCode::ACCEPTED {
        let text = server_text(&resp.bytes().await.unwrap_or_default());
        logged(Some(status.as_u16()), Some(text.clone()));
        bail!("{url}: the kick-off was refused ({status}): {text}");
    }
    let Some(location) = location else {
        logged(None, Some("202 without a Content-Location".into()));
        bail!("{url}: 202 without a Content-Location (the status URL)");
    };
    *c.log.export_id.lock().expect("no panic") = strip(&location);
    logged(None, None);
    Ok(location)
}

async fn kick_off_request(
    c: &Client,
    o: &ExportOptions,
    url: &str,
    params: &[(String, String)],
) -> Result<reqwest::Response> {
    let url = url.to_string();
    let params = params.to_vec();
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
    Ok(resp)
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
                let text = server_text(&body);
                log.log(
                    "status_error",
                    serde_json::json!({"code": s.as_u16(), "body": text, "message": format!("{s}: {text}")}),
                );
                if is_transient(&outcome) {
                    c.retrying(job, Some(s.as_u16()), &text, backoff, 1);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(c.max_poll);
                    continue;
                }
                bail!("{}: the export failed ({s}): {text}", strip(job));
            }
        }
    }
}

/// Every URL of a manifest page (its files, error and deleted files, next page) must be an
/// absolute http(s) URL: anything else (`file:///etc/hostname`, a relative path) is refused,
/// naming the entry. No local file is ever read because a server said so.
fn check_urls(page: &Value) -> Result<()> {
    let mut urls: Vec<(String, Option<&str>)> = Vec::new();
    for key in ["output", "error", "outcome", "deleted"] {
        for (i, e) in page[key].as_array().into_iter().flatten().enumerate() {
            urls.push((format!("{key}[{i}].url"), e["url"].as_str()));
        }
    }
    for (i, l) in page["link"].as_array().into_iter().flatten().enumerate() {
        urls.push((format!("link[{i}].url"), l["url"].as_str()));
    }
    for (at, url) in urls {
        let Some(url) = url else {
            bail!("the manifest's {at} is missing: the server's manifest is not valid");
        };
        match url::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {}
            _ => bail!(
                "the manifest's {at} is not an absolute http(s) URL ({}): the server's manifest \
                 is not valid; nothing is read from it",
                strip(url)
            ),
        }
    }
    Ok(())
}

/// The manifest's entries of one kind over every page (`link` with relation `next`).
async fn all_pages(c: &Client, first: Value) -> Result<Vec<Value>> {
    check_urls(&first)?;
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
        let status = resp.status();
        let body = resp.bytes().await?;
        if !status.is_success() {
            bail!(
                "{}: a manifest page: {status}: {}",
                strip(&url),
                server_text(&body)
            );
        }
        let page: Value = serde_json::from_slice(&body)
            .with_context(|| format!("{}: the manifest page is not JSON", strip(&url)))?;
        check_urls(&page)?;
        pages.push(page);
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
    /// The file links of fresh manifests, shared by every download of the export.
    links: Arc<tokio::sync::Mutex<Links>>,
}

/// The file links of the latest fresh manifest, asked for once however many downloads find
/// their links expired at once.
#[derive(Default)]
struct Links {
    /// How many fresh manifests were asked for (0: the links are the first manifest's).
    generation: u64,
    /// The fresh manifest's file URLs, by entry.
    urls: Vec<String>,
}

/// Said of files a server no longer has.
const GONE: &str = "so --resume cannot help";

/// A file request's answer that a fresh link may cure: signed links expire (a 403 from
/// S3-style storage, 401, 404 or 410 elsewhere).
fn link_expired(s: StatusCode) -> bool {
    [
        StatusCode::UNAUTHORIZED,
        StatusCode::FORBIDDEN,
        StatusCode::NOT_FOUND,
        StatusCode::GONE,
    ]
    .contains(&s)
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

    /// The file, asking the status URL for new links if this one has expired: once per
    /// manifest, whichever download finds it first (the others wait for its answer and take
    /// their new links from it). `generation`: the manifest `url` came from.
    async fn fetch(&self, url: &str, generation: u64) -> Result<reqwest::Response> {
        let resp = self.get(url).await?;
        let status = resp.status();
        if !link_expired(status) {
            return Ok(resp);
        }
        let said = server_text(&resp.bytes().await.unwrap_or_default());
        self.log.log(
            "download_error",
            serde_json::json!({
                "fileUrl": strip(url), "code": status.as_u16(), "body": said,
                "message": format!("{status}: {said}; asking the status URL for new links"),
                "responseHeaders": null,
            }),
        );
        // The status URL answers with the manifest, and fresh links, until the job is deleted
        // (export.html, "Bulk Data Status Request": complete status).
        let fresh = {
            let mut links = self.links.lock().await;
            if links.generation <= generation {
                links.urls = self.fresh_links().await.unwrap_or_default();
                links.generation += 1;
            }
            links.urls.get(self.entry).cloned()
        };
        let gone = |why: String| {
            anyhow!(
                "{}: {status} ({said}), and {why}: the server no longer has the job's files, \
                 {GONE}: export again",
                strip(url)
            )
        };
        let Some(fresh) = fresh else {
            return Err(gone("the status URL gives no new manifest".into()));
        };
        let resp = self.get(&fresh).await?;
        if link_expired(resp.status()) {
            return Err(gone(format!(
                "the new manifest's link answers {} too",
                resp.status()
            )));
        }
        Ok(resp)
    }

    /// The file URLs of a fresh manifest (every page), by entry.
    async fn fresh_links(&self) -> Option<Vec<String>> {
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
        pages
            .iter()
            .flat_map(|p| p["output"].as_array().into_iter().flatten())
            .map(|o| o["url"].as_str().map(str::to_string))
            .collect()
    }
}

/// Opens a download as it streams, copying it into OUT/_export/files (or `--keep-ndjson`).
fn opener(d: Arc<Download>, url: String) -> Opener {
    Opener(Arc::new(move || {
        if crate::interrupt::requested() {
            return Err(std::io::Error::other(crate::interrupt::MESSAGE));
        }
        d.log.log(
            "download_request",
            serde_json::json!({"fileUrl": strip(&url), "itemType": "output", "resourceType": d.item}),
        );
        let resp =
            block_on(d.fetch(&url, 0)).map_err(|e| std::io::Error::other(format!("{e:#}")))?;
        let status = resp.status();
        if !status.is_success() {
            let said = server_text(&block_on(resp.bytes()).unwrap_or_default());
            return Err(std::io::Error::other(format!(
                "{}: {status}: {said}",
                strip(&url)
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
        let (progress, entry, log) = (d.progress.clone(), d.entry, d.log.clone());
        let file_url = strip(&url);
        let tee = Tee::new(
            download,
            copy,
            gzip,
            Box::new(move |bytes, lines| {
                log.log(
                    "download_complete",
                    serde_json::json!({"fileUrl": file_url, "resourceCount": lines, "fileSize": bytes}),
                );
                progress.done(entry, name)
            }),
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

/// What an export did.
#[derive(Debug)]
pub enum Exported {
    /// The files were converted and published: the run record.
    Published(Box<RunRecord>),
    /// `--resume` of a job OUT's run record already names as published (the process was
    /// stopped after its commit): only the job's leftovers were cleaned up.
    AlreadyPublished { job: String, run_id: String },
}

/// The run id of OUT's last run when it published the export of `job`.
fn published_run(out: &Location, job: &str) -> Option<String> {
    let record = match out {
        Location::Local(dir) => fs_err::read(dir.join(layout::RUN_RECORD)).ok()?,
        Location::Remote(r) => r.read(layout::RUN_RECORD).ok()??.to_vec(),
    };
    let record: Value = serde_json::from_slice(&record).ok()?;
    (record["export"]["job"].as_str() == Some(job))
        .then(|| record["run_id"].as_str().unwrap_or_default().to_string())
}

/// Runs an export into `convert.out`.
///
/// A stop asked for with [`crate::interrupt::request`] (the binary's Ctrl-C) ends it at the
/// next download or before its commit, with an error that says how to resume.
pub fn run(o: ExportOptions, convert: &ConvertOptions) -> Result<Exported> {
    let dir = ExportDir::under(&convert.out, layout::EXPORT_DIR);
    let log = EventLog::new(dir.clone());
    let client = Arc::new(Client {
        http: reqwest::Client::builder()
            .user_agent(concat!("fhir2parquet/", env!("CARGO_PKG_VERSION")))
            .build()?,
        auth: o.auth,
        max_poll: o.max_poll,
        log: log.clone(),
        quiet: o.quiet,
    });
    let o = ExportOptions { auth: None, ..o };
    let kept = dir.read(STATE)?;
    let state = match (o.resume, kept) {
        (true, kept) => {
            let kept = kept
                .ok_or_else(|| anyhow!("no export to resume: {} is missing", dir.display(STATE)))?;
            let state = serde_json::from_slice::<State>(&kept)
                .with_context(|| format!("{} is damaged", dir.display(STATE)))?;
            *log.export_id.lock().expect("no panic") = strip(&state.job);
            if let Some(run_id) = published_run(&convert.out, &strip(&state.job)) {
                // Committed, then stopped before the job's leftovers went: only clean up.
                log.log(
                    "resume",
                    serde_json::json!({"alreadyPublished": true, "runId": run_id}),
                );
                log.flush();
                finish(&client, &o, &dir, &state.job, convert);
                return Ok(Exported::AlreadyPublished {
                    job: strip(&state.job),
                    run_id,
                });
            }
            state
        }
        (false, Some(kept)) => {
            let old: Option<State> = serde_json::from_slice(&kept).ok();
            let what = old
                .as_ref()
                .map(|s| format!(" ({}, kicked off {})", strip(&s.job), s.kicked_off))
                .unwrap_or_default();
            if !o.restart {
                bail!(
                    "{} holds an unfinished export{what}: `{}` goes on with it; --restart \
                     deletes it (on the server too) and starts a new one",
                    convert.out.display(),
                    resume_command(&convert.out)
                );
            }
            if let Some(old) = old {
                if !o.quiet {
                    eprintln!(
                        "fhir2parquet: deleting the unfinished export {} and starting anew",
                        strip(&old.job)
                    );
                }
                let _ = block_on(client.send(Method::DELETE, &old.job, true, &|r| r));
            }
            dir.remove(STATE);
            ExportDir::under(&convert.out, layout::EXPORT_FILES_DIR).remove_all();
            new_job(&client, &o)?
        }
        (false, None) => new_job(&client, &o)?,
    };
    let job = state.job.clone();
    let progress = Arc::new(Progress {
        dir: dir.clone(),
        state: std::sync::Mutex::new(state),
    });
    progress.save(&progress.state.lock().expect("no panic"))?;
    let result = download_and_convert(&client, &o, convert, &dir, &job, progress.clone());
    match result {
        Ok(record) => {
            crate::dataset::commit::failpoint("export-committed");
            finish(&client, &o, &dir, &job, convert);
            Ok(Exported::Published(Box::new(record)))
        }
        Err(e) => {
            log.log(
                "export_error",
                serde_json::json!({"message": format!("{e:#}")}),
            );
            log.flush();
            Err(e)
        }
    }
}

/// Kicks off a new job; its state.
fn new_job(client: &Client, o: &ExportOptions) -> Result<State> {
    let job = block_on(kick_off(client, o))?;
    Ok(State {
        base: o.base.clone(),
        job,
        kicked_off: chrono::Utc::now().to_rfc3339(),
        done: Default::default(),
        sign_in: o.sign_in.clone(),
    })
}

/// After the commit: the job deleted on the server (unless kept), the state and the copies
/// of the downloads removed (unless kept).
fn finish(client: &Client, o: &ExportOptions, dir: &ExportDir, job: &str, c: &ConvertOptions) {
    if !o.keep_job {
        let _ = block_on(client.send(Method::DELETE, job, true, &|r| r));
    }
    dir.remove(STATE);
    if o.keep_ndjson.is_none() {
        ExportDir::under(&c.out, layout::EXPORT_FILES_DIR).remove_all();
    }
}

/// Polls, reads the manifest, downloads and converts; the run record.
fn download_and_convert(
    client: &Arc<Client>,
    o: &ExportOptions,
    convert: &ConvertOptions,
    dir: &ExportDir,
    job: &str,
    progress: Arc<Progress>,
) -> Result<RunRecord> {
    let log = &client.log;
    let bar = match o.progress {
        true => indicatif::ProgressBar::new_spinner(),
        false => indicatif::ProgressBar::hidden(),
    };
    let manifest = block_on(poll(client, job, &bar, log))?;
    bar.finish_and_clear();
    check_urls(&manifest)?;
    let count = |m: &Value, k: &str| m[k].as_array().map_or(0, Vec::len);
    log.log(
        "status_complete",
        serde_json::json!({"transactionTime": manifest["transactionTime"]}),
    );
    let pages = block_on(all_pages(client, manifest.clone()))?;
    for p in &pages {
        log.log(
            "status_page_complete",
            serde_json::json!({
                "transactionTime": manifest["transactionTime"],
                "outputFileCount": count(p, "output"),
                "deletedFileCount": count(p, "deleted"),
                "errorFileCount": count(p, "error") + count(p, "outcome"),
            }),
        );
    }
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
        None => ExportDir::under(&convert.out, layout::EXPORT_FILES_DIR),
    };
    let done = progress.state.lock().expect("no panic").done.clone();
    let links = Arc::new(tokio::sync::Mutex::new(Links::default()));
    let mut sources = Vec::new();
    let mut extra = Vec::new();
    let mut types: Vec<String> = Vec::new();
    let mut reused = 0;
    for page in &pages {
        for e in page["output"].as_array().into_iter().flatten() {
            let url = e["url"]
                .as_str()
                .ok_or_else(|| anyhow!("a manifest output entry has no url"))?;
            let entry = sources.len();
            let name = strip(url);
            let count = e["count"].as_u64();
            let item = e["type"].as_str().unwrap_or_default().to_string();
            if !types.contains(&item) {
                types.push(item.clone());
            }
            let download = Arc::new(Download {
                client: client.clone(),
                job: job.to_string(),
                entry,
                with_token: token_for_files,
                item,
                log: log.clone(),
                copies: copies.clone(),
                progress: progress.clone(),
                links: links.clone(),
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
    if o.resume {
        log.log(
            "resume",
            serde_json::json!({"filesKept": reused, "filesToDownload": sources.len() - reused}),
        );
    }
    let (extra_lines, deleted) = block_on(save_extra(client, &extra, dir))?;
    let outcome_files = extra.iter().filter(|e| e.0 == "outcome").count();
    // The server's own report of what it could not export: a partial dataset is not
    // published as whole.
    let (failures, incomplete) = server_failures(dir, outcome_files, &types);
    if !failures.is_empty() && !o.allow_partial {
        let which = match incomplete.is_empty() {
            true => "it names no type, so any may be incomplete".to_string(),
            false => format!("incomplete: {}", incomplete.join(", ")),
        };
        bail!(
            "the server reports {} failure(s) in this export's error files ({which}): {}; \
             nothing was published. The error files are in {}. `{} --allow-partial` publishes \
             what came (exit code 3), or export again",
            failures.len(),
            failures
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; "),
            dir.display(""),
            resume_command(&convert.out),
        );
    }

    let mut convert = convert.clone();
    // A download that fails stops the run before anything is published: what was fetched is
    // kept for --resume.
    convert.strict_inputs = true;
    // An export organized by patient (asked now, or by the job resumed, as its manifest's
    // request says) starts each patient's block with a Parameters header: not data.
    let organized = o.params.iter().any(|(k, _)| k == "organizeOutputBy")
        || manifest["request"]
            .as_str()
            .is_some_and(|r| r.contains("organizeOutputBy="));
    if organized {
        convert.header_type = Some("Parameters".into());
    }
    convert.export = Some(serde_json::json!({
        "server": o.base,
        "job": strip(job),
        "request": manifest["request"],
        "transactionTime": manifest["transactionTime"],
        "files": sources.len(),
        "outcome_and_deleted_lines": extra_lines,
        "deleted_resources": deleted.len(),
        "server_failures": failures,
        "incomplete_types": incomplete,
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
        let kept = progress.state.lock().expect("no panic").done.len();
        // Files the server no longer has: a resume would meet the same.
        if format!("{e:#}").contains(GONE) {
            return e.context(format!(
                "the export stopped with {kept} of {} files downloaded",
                sources.len()
            ));
        }
        e.context(format!(
            "the export stopped; {kept} of {} files are kept: run `{}` to go on",
            sources.len(),
            resume_command(&convert.out)
        ))
    })?;
    // Published: the server's deleted resources recorded beside the data.
    if let Err(e) = write_deleted(
        &ExportDir::under(&convert.out, layout::DELETED_DIR),
        &deleted,
        manifest["transactionTime"].as_str().unwrap_or_default(),
    ) {
        eprintln!("warning: the list of deleted resources was not written: {e:#}");
    }
    let rows: u64 = record.types.values().map(|t| t.rows).sum();
    log.log(
        "export_complete",
        serde_json::json!({
            "files": sources.len(),
            "resources": rows,
            "bytes": record.inputs.iter().map(|i| i.size).sum::<u64>(),
            "attachments": null,
            "duration": (record.seconds * 1000.0) as u64,
        }),
    );
    log.flush();
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
            allow_partial: false,
            restart: false,
            sign_in: SignIn::default(),
            quiet: true,
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
