//! Downloads: each manifest file streamed into the pipeline as it arrives, kept for `--resume`, links renewed when they expire.

use super::event_log::EventLog;
use super::http::{server_text, strip, Client};
use super::spool::{ExportDir, Spool, Tee};
use super::state::Progress;
use super::status::all_pages;
use crate::input::Opener;
use crate::store::{block_on, StreamReader};
use anyhow::{anyhow, Result};
use futures::StreamExt;
use reqwest::{header, Method, StatusCode};
use serde_json::Value;
use std::sync::Arc;

/// One manifest output entry to download.
pub(super) struct Download {
    pub(super) client: Arc<Client>,
    /// The status URL, asked again for fresh links when a file link has expired.
    pub(super) job: String,
    /// The entry's position in `output` over all manifest pages.
    pub(super) entry: usize,
    pub(super) with_token: bool,
    pub(super) item: String,
    pub(super) log: EventLog,
    /// Where the copy goes.
    pub(super) copies: ExportDir,
    pub(super) progress: Arc<Progress>,
    /// The file links of fresh manifests, shared by every download of the export.
    pub(super) links: Arc<tokio::sync::Mutex<Links>>,
}

/// The file links of the latest fresh manifest, asked for once however many downloads find
/// their links expired at once.
#[derive(Default)]
pub(super) struct Links {
    /// How many fresh manifests were asked for (0: the links are the first manifest's).
    pub(super) generation: u64,
    /// The fresh manifest's file URLs, by entry.
    pub(super) urls: Vec<String>,
}

/// Said of files a server no longer has.
pub(super) const GONE: &str = "so --resume cannot help";

/// A file request's answer that a fresh link may cure: signed links expire (a 403 from
/// S3-style storage, 401, 404 or 410 elsewhere).
pub(super) fn link_expired(s: StatusCode) -> bool {
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
    pub(super) fn name(&self) -> String {
        let t: String = self
            .item
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        format!("{t}-{}.ndjson.gz", self.entry)
    }

    pub(super) async fn get(&self, url: &str) -> Result<reqwest::Response> {
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
    pub(super) async fn fetch(&self, url: &str, generation: u64) -> Result<reqwest::Response> {
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
    pub(super) async fn fresh_links(&self) -> Option<Vec<String>> {
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
pub(super) fn opener(d: Arc<Download>, url: String) -> Opener {
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
pub(super) fn kept(copies: ExportDir, name: String) -> Opener {
    Opener(Arc::new(move || {
        copies
            .open(&name)
            .map(|r| Box::new(r) as Box<dyn std::io::Read>)
    }))
}
