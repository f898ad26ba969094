//! `convert --merge`: a change set (a `_since` export, with its manifest's `deleted` files)
//! applied to a dataset's Delta tables by resource `id`.
//!
//! Per id, the version with the latest `meta.lastUpdated` wins; where the times are equal, or
//! either is missing, the later one wins (an input line over the table, a later line over an
//! earlier one). An id listed in a `deleted` file (Bundles of `DELETE Type/id` requests) leaves
//! its table, unless the change set also holds the resource and it was re-created after the
//! deletion (its `lastUpdated` after the entry's `response.lastModified` or the Bundle's
//! `timestamp`; a deletion of unknown time loses to a resource of the same change set, which
//! the server exported as it was at the export's end).
//!
//! [`plan`] decides this before the conversion, from the input's `(id, lastUpdated)` and the
//! table's: the input lines that lose are never converted, and the table files that hold a
//! replaced or deleted id are rewritten without those rows (see [`rewrite`]). The commit adds the
//! run's files and the rewritten ones and removes the files they replace, so a merge rewrites only
//! the files that hold changed ids.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::TimestampMicrosecondType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use serde::Serialize;

use crate::dataset::delta;
use crate::input::{self, Source};
use crate::json::{self, Json};
use crate::store::{Location, RemoteFile};

/// What a merge did to a type's table.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct MergeCounts {
    /// Ids new to the table.
    pub inserted: u64,
    /// Ids of the table whose row the change set replaced.
    pub updated: u64,
    /// Ids of the table that were deleted.
    pub deleted: u64,
    /// Rows of the table the change set left as they were.
    pub unchanged: u64,
    /// Input lines not applied: older than the table's or a later line's version of the id.
    pub superseded: u64,
    /// Deletions of ids neither the table nor the change set holds.
    pub deletes_of_unknown_ids: u64,
}

/// A deletion from a `deleted` file.
#[derive(Debug, Clone)]
pub struct Delete {
    pub resource_type: String,
    pub id: String,
    /// Microseconds since 1970 (the entry's `response.lastModified` or its Bundle's
    /// `timestamp`), where given.
    pub when: Option<i64>,
}

/// The decisions of a merge.
#[derive(Debug, Default)]
pub struct Plan {
    /// Input lines not to convert: (source, line).
    pub skip: HashSet<(usize, u64)>,
    /// Per type: the ids whose table rows go (replaced or deleted).
    pub replaced: BTreeMap<String, HashSet<String>>,
    /// Per type: which table files hold those ids (relative to the table's folder).
    pub files_to_rewrite: BTreeMap<String, Vec<delta::SnapshotFile>>,
    pub counts: BTreeMap<String, MergeCounts>,
}

/// Who holds an id's winning version so far.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Holder {
    Table,
    Line(usize, u64),
    Deleted,
}

/// An instant's microseconds since 1970, or `None` where it is no instant.
fn micros(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_micros())
}

/// Whether a version of `new` time replaces one of `old` time: a later time, or equal or
/// unknown times (the later one in the change set wins).
fn replaces(new: Option<i64>, old: Option<i64>) -> bool {
    match (new, old) {
        (Some(n), Some(o)) => n >= o,
        _ => true,
    }
}

/// A table's current files and, per id, its `meta.lastUpdated` and the file that holds it.
type TableIds = (
    Vec<delta::SnapshotFile>,
    HashMap<String, (Option<i64>, usize)>,
);

/// The ids and `meta.lastUpdated` of a table's current version, with the file of each.
fn table_ids(dataset: &Location, rt: &str) -> Result<Option<TableIds>> {
    if !delta::is_table(dataset, rt)? {
        return Ok(None);
    }
    let snap = delta::snapshot(dataset, rt, None)?;
    let mut ids = HashMap::new();
    for (i, f) in snap.files.iter().enumerate() {
        for batch in read_file(dataset, rt, f, true)? {
            let id = batch
                .column_by_name("id")
                .map(|c| c.as_string::<i32>().clone());
            let lu = batch
                .column_by_name("meta")
                .and_then(|m| m.as_struct().column_by_name("lastUpdated").cloned());
            let Some(id) = id else { continue };
            for row in 0..batch.num_rows() {
                if id.is_null(row) {
                    continue;
                }
                let when = lu.as_ref().and_then(|c| {
                    let c = c.as_primitive::<TimestampMicrosecondType>();
                    c.is_valid(row).then(|| c.value(row))
                });
                ids.insert(id.value(row).to_string(), (when, i));
            }
        }
    }
    Ok(Some((snap.files, ids)))
}

/// The batches of a table file: every column, or (`keys`) only `id` and `meta.lastUpdated`.
fn read_file(
    dataset: &Location,
    rt: &str,
    f: &delta::SnapshotFile,
    keys: bool,
) -> Result<Vec<RecordBatch>> {
    let what = || format!("cannot read {rt}/{} in {}", f.path, dataset.display());
    match dataset {
        Location::Local(dir) => {
            let mut p = dir.join(rt);
            p.extend(f.path.split('/'));
            let file = std::fs::File::open(&p).with_context(what)?;
            batches(file, keys).with_context(what)
        }
        Location::Remote(remote) => {
            let path = remote.path(&format!("{rt}/{}", f.path));
            batches(RemoteFile::new(remote, path, f.bytes), keys).with_context(what)
        }
    }
}

/// Every batch of a Parquet file (with `keys`, of its `id` and `meta.lastUpdated` columns).
fn batches<R: parquet::file::reader::ChunkReader + 'static>(
    file: R,
    keys: bool,
) -> Result<Vec<RecordBatch>> {
    let b = ParquetRecordBatchReaderBuilder::try_new(file)?;
    let b = match keys {
        true => {
            let mask = key_mask(b.parquet_schema());
            b.with_projection(mask)
        }
        false => b,
    };
    Ok(b.build()?.collect::<Result<Vec<_>, _>>()?)
}

fn key_mask(schema: &parquet::schema::types::SchemaDescriptor) -> ProjectionMask {
    let leaves: Vec<usize> = (0..schema.num_columns())
        .filter(|&i| {
            let p = schema.column(i).path().string();
            p == "id" || p == "meta.lastUpdated"
        })
        .collect();
    ProjectionMask::leaves(schema, leaves)
}

/// The deletions the `deleted` files of the manifests among `inputs` list. A line that is not a
/// Bundle of `DELETE Type/id` requests is an error naming the file and line (nothing is applied).
pub fn deletes(inputs: &[Location]) -> Result<Vec<Delete>> {
    let mut out = Vec::new();
    for input in inputs {
        let Location::Local(path) = input else {
            continue;
        };
        let manifest = match path.is_dir() {
            true => path.join("manifest.json"),
            false => path.clone(),
        };
        if !manifest.is_file() || manifest.extension().is_none_or(|e| e != "json") {
            continue;
        }
        for file in input::manifest::deleted_files(&manifest)? {
            out.extend(deleted_file(&file)?);
        }
    }
    Ok(out)
}

fn deleted_file(path: &Path) -> Result<Vec<Delete>> {
    let text = fs_err::read_to_string(path)
        .with_context(|| format!("cannot read the deleted file {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |what: &str| {
            anyhow::anyhow!(
                "{}, line {}: {what}; a deleted file holds Bundles whose entries have \
                 request.method DELETE and request.url Type/id (nothing of this merge was applied)",
                path.display(),
                n + 1
            )
        };
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| at(&format!("not JSON ({e})")))?;
        if v["resourceType"] != "Bundle" {
            return Err(at("at /resourceType: not a Bundle"));
        }
        let stamp = v["timestamp"].as_str().and_then(micros);
        for (i, e) in v["entry"].as_array().into_iter().flatten().enumerate() {
            let method = e["request"]["method"].as_str().unwrap_or_default();
            let url = e["request"]["url"].as_str().unwrap_or_default();
            let parts: Vec<&str> = url.trim_matches('/').rsplit('/').take(2).collect();
            if method != "DELETE" || parts.len() != 2 {
                return Err(at(&format!("at /entry/{i}/request: not DELETE Type/id")));
            }
            let when = e["response"]["lastModified"]
                .as_str()
                .and_then(micros)
                .or(stamp);
            out.push(Delete {
                resource_type: parts[1].to_string(),
                id: parts[0].to_string(),
                when,
            });
        }
    }
    Ok(out)
}

/// Decides the merge of `sources` and `deletes` into the dataset's tables (see the module
/// documentation). Reads every input line once (their `resourceType`, `id` and
/// `meta.lastUpdated`) and the `id` and `meta.lastUpdated` columns of the tables it touches.
pub fn plan(
    sources: &[Source],
    deletes: &[Delete],
    dataset: &Location,
    version: crate::schema::FhirVersion,
) -> Result<Plan> {
    // (type, id) -> (time, holder), in input order.
    let mut winners: HashMap<(String, String), (Option<i64>, Holder)> = HashMap::new();
    let mut tables: HashMap<String, Option<TableIds>> = HashMap::new();
    let mut plan = Plan::default();
    let mut arena = bumpalo::Bump::new();
    let (_recycle, recycled) = crossbeam_channel::bounded::<Vec<u8>>(1);
    let mut lines: Vec<(usize, u64, String, String, Option<i64>)> = Vec::new();
    for (i, source) in sources.iter().enumerate() {
        if source.is_stdin() {
            bail!("--merge reads its input twice: give files, not standard input");
        }
        let outcome =
            input::read_chunks(i, source, Arc::new(AtomicU64::new(0)), &recycled, |chunk| {
                let data = &chunk.data[..];
                let mut start = 0;
                let ends = memchr::memchr_iter(b'\n', data).chain(std::iter::once(data.len()));
                for (line, end) in (chunk.first_line..).zip(ends) {
                    let raw = &data[start..end];
                    start = end + 1;
                    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
                    let Ok(text) = std::str::from_utf8(raw) else {
                        continue;
                    };
                    arena.reset();
                    // Lines that are no resources are left to the conversion, which rejects them.
                    let Ok(doc) = json::parse_in(text, &arena) else {
                        continue;
                    };
                    let (Some(rt), Some(id)) = (
                        doc.get("resourceType").and_then(Json::as_str),
                        doc.get("id").and_then(Json::as_str),
                    ) else {
                        continue;
                    };
                    let when = doc
                        .get("meta")
                        .and_then(|m| m.get("lastUpdated"))
                        .and_then(Json::as_str)
                        .and_then(micros);
                    lines.push((i, line, rt.to_string(), id.to_string(), when));
                }
                true
            });
        outcome.with_context(|| format!("cannot read {}", source.display()))?;
    }
    let mut types: Vec<String> = lines.iter().map(|l| l.2.clone()).collect();
    types.extend(deletes.iter().map(|d| d.resource_type.clone()));
    types.sort();
    types.dedup();
    for rt in &types {
        if crate::schema::node::resource_members(version, rt).is_none() {
            continue;
        }
        let t = table_ids(dataset, rt)?;
        if let Some((_, ids)) = &t {
            for (id, (when, _)) in ids {
                winners.insert((rt.clone(), id.clone()), (*when, Holder::Table));
            }
        }
        tables.insert(rt.clone(), t);
    }
    for (source, line, rt, id, when) in lines {
        let key = (rt, id);
        let counts = plan.counts.entry(key.0.clone()).or_default();
        match winners.get(&key) {
            Some((old, holder)) if !replaces(when, *old) => {
                let _ = holder;
                plan.skip.insert((source, line));
                counts.superseded += 1;
            }
            Some((_, Holder::Line(s, l))) => {
                plan.skip.insert((*s, *l));
                counts.superseded += 1;
                winners.insert(key, (when, Holder::Line(source, line)));
            }
            _ => {
                winners.insert(key, (when, Holder::Line(source, line)));
            }
        }
    }
    for d in deletes {
        let key = (d.resource_type.clone(), d.id.clone());
        let counts = plan.counts.entry(key.0.clone()).or_default();
        match winners.get(&key).copied() {
            None => counts.deletes_of_unknown_ids += 1,
            Some((_, Holder::Deleted)) => {}
            Some((_, Holder::Table)) => {
                winners.insert(key, (d.when, Holder::Deleted));
            }
            // Re-created after the deletion: the resource stays. Deleted after (or at an
            // unknown time, see the module documentation): gone.
            Some((when, Holder::Line(s, l))) => {
                let recreated = match (when, d.when) {
                    (Some(w), Some(dw)) => w > dw,
                    _ => true,
                };
                if !recreated {
                    plan.skip.insert((s, l));
                    winners.insert(key, (d.when, Holder::Deleted));
                }
            }
        }
    }
    // The outcome per id against the table.
    for ((rt, id), (_, holder)) in &winners {
        let in_table = tables
            .get(rt)
            .and_then(|t| t.as_ref())
            .and_then(|(_, ids)| ids.get(id));
        let counts = plan.counts.entry(rt.clone()).or_default();
        match (holder, in_table) {
            (Holder::Table, _) => counts.unchanged += 1,
            (Holder::Line(..), None) => counts.inserted += 1,
            (Holder::Deleted, None) => {}
            (Holder::Line(..) | Holder::Deleted, Some(_)) => {
                match holder {
                    Holder::Deleted => counts.deleted += 1,
                    _ => counts.updated += 1,
                }
                plan.replaced
                    .entry(rt.clone())
                    .or_default()
                    .insert(id.clone());
            }
        }
    }
    for (rt, ids) in &plan.replaced {
        let Some(Some((files, held))) = tables.get(rt) else {
            continue;
        };
        let mut which: Vec<usize> = ids
            .iter()
            .filter_map(|id| held.get(id).map(|h| h.1))
            .collect();
        which.sort();
        which.dedup();
        plan.files_to_rewrite.insert(
            rt.clone(),
            which.into_iter().map(|i| files[i].clone()).collect(),
        );
    }
    Ok(plan)
}

/// A table file rewritten without the rows of `drop`: the new file (relative to the table's
/// folder, beside the old one), or `None` where no row is left. Written where the table is,
/// named after the run; no reader sees it before the merge's commit.
pub fn rewrite(
    dataset: &Location,
    rt: &str,
    f: &delta::SnapshotFile,
    drop: &HashSet<String>,
    name: &str,
    props: parquet::file::properties::WriterProperties,
) -> Result<Option<delta::NewFile>> {
    let batches = read_file(dataset, rt, f, false)?;
    let Some(schema) = batches.first().map(|b| b.schema()) else {
        return Ok(None);
    };
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema, Some(props))?;
    let mut rows = 0;
    for b in batches {
        let ids = b.column_by_name("id").map(|c| c.as_string::<i32>().clone());
        let keep: BooleanArray = (0..b.num_rows())
            .map(|r| {
                Some(
                    ids.as_ref()
                        .is_none_or(|ids| ids.is_null(r) || !drop.contains(ids.value(r))),
                )
            })
            .collect();
        let kept = arrow::compute::filter_record_batch(&b, &keep)?;
        rows += kept.num_rows() as u64;
        if kept.num_rows() > 0 {
            w.write(&kept)?;
        }
    }
    w.close()?;
    if rows == 0 {
        return Ok(None);
    }
    let dir = f
        .path
        .rsplit_once('/')
        .map(|(d, _)| format!("{d}/"))
        .unwrap_or_default();
    let rel = format!("{dir}{name}");
    let bytes = buf.len() as u64;
    match dataset {
        Location::Local(root) => {
            let mut p: PathBuf = root.join(rt);
            p.extend(rel.split('/'));
            fs_err::write(&p, &buf).with_context(|| format!("cannot write {}", p.display()))?;
        }
        Location::Remote(remote) => remote.put(&format!("{rt}/{rel}"), buf)?,
    }
    Ok(Some(delta::NewFile {
        path: rel,
        bytes,
        rows: Some(rows),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_or_equal_or_unknown_times_replace() {
        assert!(replaces(Some(2), Some(1)));
        assert!(replaces(Some(1), Some(1)));
        assert!(!replaces(Some(1), Some(2)));
        assert!(replaces(None, Some(2)));
        assert!(replaces(Some(1), None));
    }
}
