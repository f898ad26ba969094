//! Polling the job's status until the manifest, checking its URLs, and following its pages.

use super::event_log::EventLog;
use super::http::{is_transient, retry_after, server_text, strip, Client};
use anyhow::{bail, Context, Result};
use reqwest::{header, Method, StatusCode};
use serde_json::Value;
use std::time::Duration;

/// Polls the status URL until the manifest is ready.
pub(super) async fn poll(
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
pub(super) fn check_urls(page: &Value) -> Result<()> {
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
pub(super) async fn all_pages(c: &Client, first: Value) -> Result<Vec<Value>> {
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
