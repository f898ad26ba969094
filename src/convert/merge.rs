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
//! table's: the input lines that lose are never converted, and the rows of the table that hold a
//! replaced or deleted id are marked deleted in their files' deletion vectors (see
//! [`crate::dataset::deletion`]). The commit adds the run's files and gives those table files
//! their new vectors, so a merge writes the change and a bitmap, not the files that hold changed
//! ids.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::TimestampMicrosecondType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

use crate::dataset::{delta, DataFile};
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
    /// Per type: the table files that hold those ids, each with the rows (positions in the
    /// file) that go.
    pub deletions: BTreeMap<String, Vec<(delta::SnapshotFile, Vec<u64>)>>,
    pub counts: BTreeMap<String, MergeCounts>,
    /// Per type: the table as the plan read it, for the commit to start from.
    pub bases: BTreeMap<String, delta::Base>,
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

/// Where a table holds an id: its `meta.lastUpdated` (the latest, where a plain convert left
/// it twice) and each row that holds it (an index into the table's files, the position in it).
#[derive(Debug, Clone, Default)]
struct Held {
    when: Option<i64>,
    at: Vec<(usize, u64)>,
}

/// A table's current files, the rows it holds, and where it holds the ids a change set names.
#[derive(Debug)]
struct TableIds {
    base: delta::Base,
    files: Vec<delta::SnapshotFile>,
    rows: u64,
    ids: FxHashMap<String, Held>,
}

/// A type's table at its current version, or `None` where the dataset has none yet.
type Opened = Option<(delta::Snapshot, delta::Base)>;

fn open_table(dataset: &Location, rt: &str) -> Result<Opened> {
    match delta::is_table(dataset, rt)? {
        true => delta::snapshot_and_base(dataset, rt).map(Some),
        false => Ok(None),
    }
}

/// Reads the `id` and `meta.lastUpdated` columns of a table's current version (rows a deletion
/// vector removed are not the table's), and keeps where it holds the ids of `wanted`.
fn table_ids(
    dataset: &Location,
    rt: &str,
    opened: Opened,
    wanted: &FxHashSet<&str>,
) -> Result<Option<TableIds>> {
    let Some((snap, base)) = opened else {
        return Ok(None);
    };
    let mut ids: FxHashMap<String, Held> = FxHashMap::default();
    let mut rows = 0;
    for (i, f) in snap.files.iter().enumerate() {
        let deleted = f.deleted.clone().unwrap_or_default();
        let mut position = 0u64;
        for batch in read_file(dataset, rt, f, true)? {
            let first = position;
            position += batch.num_rows() as u64;
            let id = batch
                .column_by_name("id")
                .map(|c| c.as_string::<i32>().clone());
            let lu = batch
                .column_by_name("meta")
                .and_then(|m| m.as_struct().column_by_name("lastUpdated").cloned());
            let lu = lu
                .as_ref()
                .map(|c| c.as_primitive::<TimestampMicrosecondType>());
            for row in 0..batch.num_rows() {
                let at = first + row as u64;
                if deleted.contains(at) {
                    continue;
                }
                rows += 1;
                let Some(id) = id
                    .as_ref()
                    .filter(|c| c.is_valid(row))
                    .map(|c| c.value(row))
                else {
                    continue;
                };
                if !wanted.contains(id) {
                    continue;
                }
                let when = lu.and_then(|c| c.is_valid(row).then(|| c.value(row)));
                let held = ids.entry(id.to_string()).or_default();
                held.when = match (held.when, when) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                held.at.push((i, at));
            }
        }
    }
    Ok(Some(TableIds {
        base,
        files: snap.files,
        rows,
        ids,
    }))
}

/// The batches of a table file: every column, or (`keys`) only `id` and `meta.lastUpdated`.
fn read_file(
    dataset: &Location,
    rt: &str,
    f: &delta::SnapshotFile,
    keys: bool,
) -> Result<Vec<RecordBatch>> {
    let what = || format!("cannot read {rt}/{} in {}", f.path, dataset.display());
    match (DataFile::of(dataset, rt, f), dataset) {
        (DataFile::Local(p), _) => {
            let file = std::fs::File::open(&p).with_context(what)?;
            batches(file, keys).with_context(what)
        }
        (DataFile::Remote { path, size }, Location::Remote(remote)) => {
            batches(RemoteFile::new(remote, path, size), keys).with_context(what)
        }
        (DataFile::Remote { .. }, Location::Local(_)) => unreachable!("a local dataset"),
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

/// An input line's `(source, line, resourceType, id, meta.lastUpdated)`.
type LineKey = (usize, u64, String, String, Option<i64>);

/// The [`LineKey`] of every input line that is a resource, calling `seen` with each line's
/// type.
fn read_keys(sources: &[Source], seen: &mut impl FnMut(&str)) -> Result<Vec<LineKey>> {
    let mut arena = bumpalo::Bump::new();
    let (_recycle, recycled) = crossbeam_channel::bounded::<Vec<u8>>(1);
    let mut lines = Vec::new();
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
                    seen(rt);
                    lines.push((i, line, rt.to_string(), id.to_string(), when));
                }
                true
            });
        outcome.with_context(|| format!("cannot read {}", source.display()))?;
    }
    Ok(lines)
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
    // (type, id) -> (time, holder), in input order, for the ids the change set names.
    let mut winners: FxHashMap<(String, String), (Option<i64>, Holder)> = FxHashMap::default();
    let mut tables: FxHashMap<String, Option<TableIds>> = FxHashMap::default();
    let mut plan = Plan::default();
    // The tables' logs are read while the input is: a type's table is opened as soon as a
    // line of it (or a deletion) is seen, two at a time per core (delta-rs hands a table's
    // parsing from thread to thread; one table per core leaves a core idle a third of the time).
    let opened: std::sync::Mutex<FxHashMap<String, Result<Opened>>> = Default::default();
    let mut lines = Vec::new();
    std::thread::scope(|scope| -> Result<()> {
        let (types, to_open) = crossbeam_channel::unbounded::<String>();
        let threads = 2 * std::thread::available_parallelism().map_or(1, |n| n.get());
        for _ in 0..threads {
            let (to_open, opened) = (to_open.clone(), &opened);
            scope.spawn(move || {
                for rt in to_open {
                    let table = open_table(dataset, &rt);
                    opened
                        .lock()
                        .expect("no table opener panicked")
                        .insert(rt, table);
                }
            });
        }
        let mut seen: FxHashSet<String> = FxHashSet::default();
        let mut open = |rt: &str| {
            if !seen.contains(rt) {
                seen.insert(rt.to_string());
                if version.has_resource(rt) {
                    let _ = types.send(rt.to_string());
                }
            }
        };
        for d in deletes {
            open(&d.resource_type);
        }
        lines = read_keys(sources, &mut open)?;
        Ok(())
    })?;
    let mut opened = opened.into_inner().expect("no table opener panicked");
    let mut types: Vec<String> = lines.iter().map(|l| l.2.clone()).collect();
    types.extend(deletes.iter().map(|d| d.resource_type.clone()));
    types.sort();
    types.dedup();
    // Each table's ids, on a thread per core.
    let mut named: FxHashMap<&str, FxHashSet<&str>> = FxHashMap::default();
    for (rt, id) in lines
        .iter()
        .map(|l| (&l.2, &l.3))
        .chain(deletes.iter().map(|d| (&d.resource_type, &d.id)))
    {
        named.entry(rt).or_default().insert(id);
    }
    let mut wanted = Vec::new();
    for rt in types.iter().filter(|rt| version.has_resource(rt)) {
        let table = opened
            .remove(rt.as_str())
            .expect("every type seen was opened")?;
        let ids = named.remove(rt.as_str()).unwrap_or_default();
        wanted.push((rt, std::sync::Mutex::new(Some(table)), ids));
    }
    let read = delta::on_threads(&wanted, |(rt, table, ids)| {
        let table = table.lock().expect("one reader per table").take();
        table_ids(dataset, rt, table.flatten(), ids)
    });
    for ((rt, _, _), t) in wanted.iter().zip(read) {
        let t = t?;
        if let Some(t) = &t {
            for (id, held) in &t.ids {
                winners.insert(((*rt).clone(), id.clone()), (held.when, Holder::Table));
            }
            plan.bases.insert((*rt).clone(), t.base.clone());
        }
        tables.insert((*rt).clone(), t);
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
            .and_then(|t| t.ids.get(id));
        let counts = plan.counts.entry(rt.clone()).or_default();
        match (holder, in_table) {
            (Holder::Table, _) => {}
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
    // The rows of the table the change set left as they were.
    for (rt, t) in &tables {
        let Some(t) = t else { continue };
        let removed: usize = plan
            .replaced
            .get(rt)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| t.ids.get(id))
                    .map(|h| h.at.len())
                    .sum()
            })
            .unwrap_or(0);
        plan.counts.entry(rt.clone()).or_default().unchanged = t.rows - removed as u64;
    }
    for (rt, ids) in &plan.replaced {
        let Some(Some(t)) = tables.get(rt) else {
            continue;
        };
        let mut rows: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
        for h in ids.iter().filter_map(|id| t.ids.get(id)) {
            for &(file, row) in &h.at {
                rows.entry(file).or_default().push(row);
            }
        }
        plan.deletions.insert(
            rt.clone(),
            rows.into_iter()
                .map(|(i, mut r)| {
                    r.sort_unstable();
                    (t.files[i].clone(), r)
                })
                .collect(),
        );
    }
    Ok(plan)
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
