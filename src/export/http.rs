//! Requests to the server: the client (its sign-in, retries with backoff on throttling, 5xx and dropped connections, `Retry-After`), and what a server says when it fails.

use super::auth::Auth;
use super::event_log::EventLog;
use anyhow::{bail, Context, Result};
use reqwest::{header, Method, StatusCode};
use serde_json::Value;
use std::time::Duration;

/// A status request is answered within these bounds, whatever Retry-After says (servers send
/// milliseconds, epoch times, hours).
pub(super) const MIN_POLL: Duration = Duration::from_millis(500);
/// Attempts of one request that fails with 429, 5xx or a dropped connection.
pub(super) const ATTEMPTS: u32 = 8;

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
pub(super) fn outcome_text(body: &Value) -> String {
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
pub(super) fn server_text(body: &[u8]) -> String {
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

pub(super) fn is_transient(body: &Value) -> bool {
    body["issue"]
        .as_array()
        .is_some_and(|is| !is.is_empty() && is.iter().all(|i| i["code"] == "transient"))
}

/// The HTTP side: one client, the token when there is one.
pub(super) struct Client {
    pub(super) http: reqwest::Client,
    pub(super) auth: Option<Auth>,
    pub(super) max_poll: Duration,
    pub(super) log: EventLog,
    /// No retry notes on stderr.
    pub(super) quiet: bool,
}

impl Client {
    /// Sends a request, with the access token when `with_token`, again on 429, 5xx and dropped
    /// connections (backoff, or Retry-After), and once with a new token on a 401.
    pub(super) async fn send(
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
    pub(super) fn retrying(
        &self,
        url: &str,
        code: Option<u16>,
        why: &str,
        wait: Duration,
        attempt: u32,
    ) {
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
pub(super) fn strip(url: &str) -> String {
    crate::store::redact(url)
}
