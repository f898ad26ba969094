//! What the server reports beside the data: its error files (which fail the run unless `--allow-partial`) and its deleted resources.

use super::http::{strip, Client};
use super::spool::ExportDir;
use anyhow::{bail, Result};
use reqwest::{header, Method};
use serde_json::Value;
use std::sync::Arc;

/// The export's manifest error files, read: failures (issues of severity error or fatal)
/// and the types they name (an issue's expression or location, else a type of the request
/// named in its text).
pub(super) fn server_failures(
    dir: &ExportDir,
    files: usize,
    types: &[String],
) -> (Vec<String>, Vec<String>) {
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
                    if crate::schema::FhirVersion::any_has_resource(t) {
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

/// Saves the manifest's error (`outcome`) and `deleted` files into OUT/_export/.
pub(super) async fn save_extra(
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
pub(super) fn deleted_entries(ndjson: &[u8]) -> Vec<(String, String)> {
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
pub(super) fn write_deleted(dir: &ExportDir, rows: &[(String, String)], when: &str) -> Result<()> {
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
