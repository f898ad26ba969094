//! The complete status response: the manifest and its pages read and logged, and what they
//! list turned into sources (downloads, or the copies an earlier try kept) and the error and
//! deleted files.

use std::sync::Arc;

use anyhow::{anyhow, Result};
use serde_json::Value;

use super::download::{kept, opener, Download, Links};
use super::http::{strip, Client};
use super::spool::ExportDir;
use super::state::Progress;
use super::status::{all_pages, check_urls, poll};
use super::ExportOptions;
use crate::input::Source;
use crate::store::block_on;

/// Polls the job to its complete status response; the manifest and all its pages, each
/// logged.
pub(super) fn read_manifest(
    client: &Client,
    o: &ExportOptions,
    job: &str,
) -> Result<(Value, Vec<Value>)> {
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
    Ok((manifest, pages))
}

/// What a manifest's pages list: the output files as sources (a copy kept by an earlier try
/// read instead of the download), the error and deleted files, the types of the output.
pub(super) struct Listed<'m> {
    pub(super) sources: Vec<Source>,
    /// (`outcome` or `deleted`, the manifest entry, whether it needs the token).
    pub(super) extra: Vec<(String, &'m Value, bool)>,
    pub(super) types: Vec<String>,
    /// Output files read from their kept copies.
    pub(super) reused: usize,
}

pub(super) fn list_files<'m>(
    client: &Arc<Client>,
    job: &str,
    manifest: &Value,
    pages: &'m [Value],
    copies: &ExportDir,
    progress: &Arc<Progress>,
) -> Result<Listed<'m>> {
    let token_for_files = manifest["requiresAccessToken"].as_bool().unwrap_or(false);
    let done = progress.state.lock().expect("no panic").done.clone();
    let links = Arc::new(tokio::sync::Mutex::new(Links::default()));
    let mut listed = Listed {
        sources: Vec::new(),
        extra: Vec::new(),
        types: Vec::new(),
        reused: 0,
    };
    for page in pages {
        for e in page["output"].as_array().into_iter().flatten() {
            let url = e["url"]
                .as_str()
                .ok_or_else(|| anyhow!("a manifest output entry has no url"))?;
            let entry = listed.sources.len();
            let name = strip(url);
            let count = e["count"].as_u64();
            let item = e["type"].as_str().unwrap_or_default().to_string();
            if !listed.types.contains(&item) {
                listed.types.push(item.clone());
            }
            let download = Arc::new(Download {
                client: client.clone(),
                job: job.to_string(),
                entry,
                with_token: token_for_files,
                item,
                log: client.log.clone(),
                copies: copies.clone(),
                progress: progress.clone(),
                links: links.clone(),
            });
            let open = match done.get(&entry) {
                Some(copy) if *copy == download.name() && copies.exists(copy) => {
                    listed.reused += 1;
                    kept(copies.clone(), copy.clone())
                }
                _ => opener(download, url.to_string()),
            };
            listed
                .sources
                .push(Source::stream(&name, false, count, open));
        }
        // 2.0 names it `error`; the 4.0 ballot `outcome`.
        for key in ["error", "outcome"] {
            for e in page[key].as_array().into_iter().flatten() {
                listed
                    .extra
                    .push(("outcome".to_string(), e, token_for_files));
            }
        }
        for e in page["deleted"].as_array().into_iter().flatten() {
            listed
                .extra
                .push(("deleted".to_string(), e, token_for_files));
        }
    }
    Ok(listed)
}
