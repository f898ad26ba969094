//! `history` and `vacuum` over every Delta table of a dataset.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{bail, Result};

use super::delta;
use crate::store::Location;

/// The dataset's Delta tables (or the one named), sorted; an error naming what is missing.
fn delta_tables(dataset: &Location, only: Option<&str>) -> Result<Vec<String>> {
    let names: Vec<String> = super::table_kinds(dataset)?
        .into_iter()
        .filter(|(n, is_delta)| *is_delta && only.is_none_or(|o| o == n))
        .map(|(n, _)| n)
        .collect();
    if names.is_empty() {
        match only {
            Some(t) => bail!(
                "{} has no Delta table {t}: `fhir2parquet sql {} -c '\\dt'` lists its tables",
                dataset.display(),
                dataset.display()
            ),
            None => bail!(
                "{} has no Delta tables (folders written with --format parquet keep no versions)",
                dataset.display()
            ),
        }
    }
    Ok(names)
}

/// Prints the commits of each table, newest first: a table, or JSON lines.
pub fn print(
    dataset: &Location,
    only: Option<&str>,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let tables = delta_tables(dataset, only)?;
    if !json {
        writeln!(
            out,
            "{:<24} {:>7}  {:<20} {:<13} {:>13} {:>11} {:>9}",
            "table", "version", "time (UTC)", "operation", "mode", "files added", "removed"
        )?;
    }
    for name in tables {
        for c in delta::history(dataset, &name)? {
            if json {
                let mut v = serde_json::to_value(&c)?;
                v["table"] = name.clone().into();
                writeln!(out, "{v}")?;
                continue;
            }
            let time = c
                .timestamp
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default();
            let n = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
            writeln!(
                out,
                "{name:<24} {:>7}  {time:<20} {:<13} {:>13} {:>11} {:>9}",
                c.version,
                c.operation,
                c.mode.as_deref().unwrap_or("-"),
                n(c.files_added),
                n(c.files_removed),
            )?;
        }
    }
    Ok(())
}

/// Vacuums every Delta table of the dataset; the files removed (or, with `dry_run`, that
/// would be) per table.
pub fn vacuum(
    dataset: &Location,
    retain_hours: u64,
    dry_run: bool,
) -> Result<BTreeMap<String, Vec<String>>> {
    let mut out = BTreeMap::new();
    for name in delta_tables(dataset, None)? {
        let files = delta::vacuum(dataset, &name, retain_hours, dry_run)?;
        out.insert(name, files);
    }
    Ok(out)
}

/// Purges every Delta table of the dataset that has deleted rows (see [`super::purge`]), under
/// the dataset's lock; what was (or, with `dry_run`, would be) rewritten per table.
pub fn purge(
    dataset: &Location,
    props: super::purge::Properties,
    dry_run: bool,
) -> Result<BTreeMap<String, super::purge::Purged>> {
    let run_id = format!("purge-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%3f"));
    let _lock = super::lock::acquire(dataset, &run_id, false)?;
    let mut out = BTreeMap::new();
    for name in delta_tables(dataset, None)? {
        if let Some(p) = super::purge::purge(dataset, &name, props, &run_id, dry_run)? {
            out.insert(name, p);
        }
    }
    Ok(out)
}
