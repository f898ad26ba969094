//! Committing a finished run to Delta tables (the default `--format delta`), locally and on
//! object stores.
//!
//! The run's Parquet files first go to their place in their table's folder (locally renamed out
//! of the run's temporary folder; on a store, their multipart uploads completed): no reader
//! sees them there, since readers take a table's files from its log. Then each type's table
//! gets one commit (an overwrite; an append with `--append`; a merge with `--merge`, see
//! [`super::merge`]), then the rejects and the run record are written. A run that fails before
//! a type's commit removes that type's files; a run killed then leaves files no version names,
//! which `vacuum` removes. Each table is committed whole or not at all; the tables of a run are
//! committed at once, each on its own (a failure names those that were committed).
//!
//! Locally, a type with no folder in OUT yet is the exception: its table is made whole in the
//! run's folder, files and version 0, and moved into OUT in one rename (nothing to mark, and
//! the commit of a new table writes no file or folder in OUT but that rename).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use object_store::path::Path as ObjPath;
use object_store::ObjectStoreExt;
use rustc_hash::FxHashMap;

use super::merge::Plan;
use super::writer::{abort_all, complete_all, folder_type, FolderFiles};
use super::{ConvertOptions, RunRecord, REJECTS_DIR, RUN_RECORD};
use crate::dataset::delta::{self, Mode, NewFile};
use crate::dataset::layout;
use crate::dataset::{DataFile, Format};
use crate::schema::FhirVersion;
use crate::store::{block_on, Location, Remote};
use deltalake_core::kernel::DeletionVectorDescriptor;

/// The table properties a run's tables are created with.
fn properties(fhir_version: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            crate::dataset::FHIR_VERSION_PROPERTY.into(),
            fhir_version.into(),
        ),
        (
            "fhir2parquet.schemaVersion".into(),
            crate::schema::SCHEMA_VERSION.into(),
        ),
        (
            "fhir2parquet.version".into(),
            env!("CARGO_PKG_VERSION").into(),
        ),
    ])
}

/// The partition columns of a type's table in this run.
fn partition_columns(opts: &ConvertOptions, rt: &str) -> Vec<String> {
    opts.partition_by
        .iter()
        .filter(|p| p.resource_type == rt)
        .map(|p| p.column())
        .collect()
}

/// Starts making, while the run converts, the schema of the table a type met for the first
/// time will be created with at the run's end (see [`delta::prepare`]). Locally only for a type
/// with no table yet; on a store for every type (finding out would cost a request).
pub fn prepare_table(opts: &ConvertOptions, version: FhirVersion, rt: &str) {
    if opts.format != Format::Delta {
        return;
    }
    let new = match &opts.out {
        Location::Local(out) => !delta::local_has_version(&out.join(rt)),
        Location::Remote(_) => true,
    };
    if new {
        delta::prepare(version, rt, &partition_columns(opts, rt));
    }
}

/// A file of the run, `name` in its folder `dir`, as its table's commit adds it.
fn new_file(dir: &Path, name: &str, rows: u64, bytes: u64) -> NewFile {
    NewFile {
        path: format!("{}{name}", inside_table(dir)),
        bytes,
        rows: Some(rows),
        deletion_vector: None,
    }
}

/// A folder of the run (`Observation/effective_year=2019`) as the path of its files inside
/// their table's folder (`effective_year=2019/`).
fn inside_table(dir: &Path) -> String {
    let mut parts = dir.iter().skip(1).map(|p| p.to_string_lossy().into_owned());
    let mut rel = parts.next().map(|p| format!("{p}/")).unwrap_or_default();
    for p in parts {
        rel.push_str(&p);
        rel.push('/');
    }
    rel
}

/// Before a run: the tables of OUT must be of the run's format where the run adds to them
/// (`--append`): an error naming the first that is not, and what to do.
pub fn check_format(opts: &ConvertOptions) -> Result<()> {
    if opts.merge {
        return check_merge(opts);
    }
    if !opts.append {
        return Ok(());
    }
    let tables = match crate::dataset::table_kinds(&opts.out) {
        Ok(t) => t,
        // No tables yet: nothing to add to.
        Err(_) => return Ok(()),
    };
    for (name, is_delta) in tables {
        match (opts.format, is_delta) {
            (Format::Delta, false) => anyhow::bail!(
                "{name} in {} is a plain Parquet folder: --append adds to it with --format \
                 parquet; or convert without --append to make it a Delta table",
                opts.out.display()
            ),
            (Format::Parquet, true) => anyhow::bail!(
                "{name} in {} is a Delta table: --append adds to it without --format parquet",
                opts.out.display()
            ),
            _ => {}
        }
    }
    Ok(())
}

/// The FHIR version of the run: the one asked for, else the version of the data already in
/// OUT, else R4. Data of another version in OUT: an error naming both (a dataset holds one
/// version), before anything is written.
pub fn check_version(opts: &ConvertOptions) -> Result<FhirVersion> {
    let existing = crate::dataset::fhir_version(&opts.out)?;
    let version = opts.fhir_version.or(existing).unwrap_or_default();
    for p in &opts.partition_by {
        p.check(version)?;
    }
    match existing {
        Some(e) if e != version => anyhow::bail!(
            "{} holds FHIR {e} ({}) data and this run converts {version} ({}): a dataset holds \
             one FHIR version; convert {version} data into a folder of its own (or give \
             --fhir-version {e} if the inputs are {e})",
            opts.out.display(),
            e.release(),
            version.release()
        ),
        _ => Ok(version),
    }
}

/// `--merge` applies a change set to Delta tables: OUT must hold a dataset of Delta tables, or
/// nothing yet (the change set is then its first version).
fn check_merge(opts: &ConvertOptions) -> Result<()> {
    if opts.format != Format::Delta {
        anyhow::bail!("--merge applies a change set to Delta tables: leave out --format parquet");
    }
    let empty = match &opts.out {
        Location::Local(dir) => fs_err::read_dir(dir).map_or(true, |mut d| {
            d.all(|e| {
                e.is_ok_and(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n == crate::dataset::lock::LOCK || n.starts_with('.')
                })
            })
        }),
        Location::Remote(remote) => remote
            .list("")?
            .iter()
            .all(|o| o.location.filename() == Some(crate::dataset::lock::LOCK)),
    };
    if empty {
        return Ok(());
    }
    let tables = crate::dataset::table_kinds(&opts.out)
        .ok()
        .filter(|t| !t.is_empty());
    let tables = tables.ok_or_else(|| {
        anyhow::anyhow!(
            "{} is not a dataset (no resource tables in it): --merge applies a change set to a \
             dataset written by `fhir2parquet convert`; give that folder, or an empty one",
            opts.out.display()
        )
    })?;
    if let Some((name, _)) = tables.iter().find(|(_, is_delta)| !is_delta) {
        anyhow::bail!(
            "{name} in {} is a plain Parquet folder (--format parquet): --merge applies a change \
             set to Delta tables; convert the full export into it again without --format \
             parquet, then merge",
            opts.out.display()
        );
    }
    Ok(())
}

/// Commits a finished local run whose files are in `tmp` (see the module documentation).
pub fn local(
    out: &Path,
    tmp: &Path,
    written: &FxHashMap<PathBuf, FolderFiles>,
    opts: &ConvertOptions,
    version: FhirVersion,
    record: &mut RunRecord,
    plan: Option<&Plan>,
) -> Result<()> {
    let mut dirs: Vec<&PathBuf> = written.keys().collect();
    dirs.sort();
    let types: std::collections::BTreeSet<String> = dirs.iter().map(|d| folder_type(d)).collect();
    // A type with no folder in OUT yet: its table is made whole in the run's folder, version 0
    // and all, and moved into OUT in one rename. Readers see it complete or not at all.
    let new: Vec<String> = types
        .iter()
        .filter(|rt| {
            fs_err::symlink_metadata(out.join(rt))
                .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
        })
        .cloned()
        .collect();
    let (mut committed, mut failed) =
        make_new_tables(out, tmp, written, &new, opts, version, record);

    // The others: their files moved to their place in the table's folder. A type whose folder
    // has no table version yet is marked first, so that no reader takes its files for a plain
    // folder's before its version 0 is committed (or after a kill before then).
    let mut by_type: BTreeMap<String, Vec<NewFile>> = BTreeMap::new();
    let mut moved: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    let rest = |rt: &String| !committed.contains(rt) && !failed.iter().any(|(t, _)| t == rt);
    let mut marked: Vec<PathBuf> = Vec::new();
    for rt in types.iter().filter(|rt| rest(rt)) {
        let table = out.join(rt);
        if delta::local_has_version(&table) {
            continue;
        }
        let marker = table.join(layout::UNCOMMITTED);
        fs_err::create_dir_all(&table)
            .and_then(|()| fs_err::write(&marker, b""))
            .with_context(|| format!("cannot write {}", marker.display()))?;
        marked.push(marker);
    }
    for dir in dirs {
        let f = &written[dir];
        let rt = folder_type(dir);
        if !rest(&rt) {
            continue;
        }
        let dest_dir = out.join(dir);
        fs_err::create_dir_all(&dest_dir)
            .with_context(|| format!("cannot create {}", dest_dir.display()))?;
        for (name, rows) in f.names.iter().zip(&f.rows) {
            let from = tmp.join(dir).join(name);
            let to = dest_dir.join(name);
            fs_err::rename(&from, &to)
                .with_context(|| format!("cannot move {} to {}", from.display(), to.display()))?;
            let bytes = fs_err::metadata(&to).map(|m| m.len()).unwrap_or(0);
            moved.entry(rt.clone()).or_default().push(to);
            by_type
                .entry(rt.clone())
                .or_default()
                .push(new_file(dir, name, *rows, bytes));
        }
    }
    crate::dataset::commit::failpoint("files-placed");
    let dataset = Location::Local(out.to_path_buf());
    let outcome = commit_types(&dataset, by_type, plan, opts, version, record, |rt| {
        for p in moved.get(rt).into_iter().flatten() {
            let _ = fs_err::remove_file(p);
        }
    });
    // Committed: the tables are. Not: their files were taken away.
    for marker in marked {
        let _ = fs_err::remove_file(marker);
    }
    let (more, more_failed) = outcome?;
    committed.extend(more);
    failed.extend(more_failed);
    finish(committed, failed)?;

    // The rejects: replaced, or added to with --append.
    let rejects = tmp.join(REJECTS_DIR);
    if rejects.is_dir() {
        let dest = out.join(REJECTS_DIR);
        if !opts.append && dest.is_dir() {
            fs_err::remove_dir_all(&dest)
                .with_context(|| format!("cannot replace {}", dest.display()))?;
        }
        fs_err::create_dir_all(&dest)?;
        for e in fs_err::read_dir(&rejects)? {
            let e = e?;
            fs_err::rename(e.path(), dest.join(e.file_name()))
                .with_context(|| format!("cannot write {}", dest.display()))?;
        }
    } else if !opts.append {
        let _ = fs_err::remove_dir_all(out.join(REJECTS_DIR));
    }
    let previous = fs_err::read_to_string(out.join(RUN_RECORD)).ok();
    let text = record.render(previous.as_deref())?;
    let partial = tmp.join(RUN_RECORD);
    fs_err::write(&partial, text)
        .and_then(|()| fs_err::rename(&partial, out.join(RUN_RECORD)))
        .with_context(|| format!("cannot write {}", out.join(RUN_RECORD).display()))?;
    let _ = fs_err::remove_dir_all(tmp);
    Ok(())
}

/// A merge's deletions (see [`super::merge`]): the rows of table files that hold replaced or
/// deleted ids, added to those files' deletion vectors, one new vector file per type. Returns
/// per type the files and their new vectors for the commit (a type with deletions only gets an
/// entry in `by_type`). The merge's counts go to the run record.
fn deletions_for_merge(
    dataset: &Location,
    plan: Option<&Plan>,
    record: &mut RunRecord,
    by_type: &mut BTreeMap<String, Vec<NewFile>>,
) -> Result<BTreeMap<String, Vec<(delta::SnapshotFile, DeletionVectorDescriptor)>>> {
    let mut out = BTreeMap::new();
    let Some(plan) = plan else {
        return Ok(out);
    };
    for (rt, counts) in &plan.counts {
        record.types.entry(rt.clone()).or_default().merge = Some(counts.clone());
    }
    for (rt, files) in &plan.deletions {
        by_type.entry(rt.clone()).or_default();
        let mut bitmaps = Vec::with_capacity(files.len());
        for (f, rows) in files {
            // The rows already deleted stay deleted.
            let mut deleted = f.deleted.as_deref().cloned().unwrap_or_default();
            deleted.extend(rows.iter().copied());
            bitmaps.push(deleted);
        }
        let dvs = crate::dataset::deletion::write(dataset, rt, &bitmaps)?;
        let changed = files.iter().map(|(f, _)| f.clone()).zip(dvs).collect();
        out.insert(rt.clone(), changed);
    }
    Ok(out)
}

/// How a run adds to its tables.
fn mode(opts: &ConvertOptions) -> Mode {
    match (opts.merge, opts.append) {
        (true, _) => Mode::Merge,
        (false, true) => Mode::Append,
        (false, false) => Mode::Overwrite,
    }
}

/// The tables of a run committed and those that failed, with why.
type Outcome = (Vec<String>, Vec<(String, anyhow::Error)>);

/// Makes the tables of `new` (types with no folder in OUT) in the run's folder `tmp`, each with
/// its version 0, and moves each into OUT whole. Returns the types committed and those that
/// failed; a type in neither is one whose folder appeared in OUT meanwhile (another writer's),
/// left for the usual path, its version 0 here removed.
fn make_new_tables(
    out: &Path,
    tmp: &Path,
    written: &FxHashMap<PathBuf, FolderFiles>,
    new: &[String],
    opts: &ConvertOptions,
    version: FhirVersion,
    record: &mut RunRecord,
) -> Outcome {
    let (mut committed, mut failed) = (Vec::new(), Vec::new());
    if new.is_empty() {
        return (committed, failed);
    }
    let mut by_type: BTreeMap<&str, Vec<NewFile>> = BTreeMap::new();
    let mut dirs: Vec<&PathBuf> = written.keys().collect();
    dirs.sort();
    for dir in dirs {
        let rt = folder_type(dir);
        let Some(rt) = new.iter().find(|t| **t == rt) else {
            continue;
        };
        let f = &written[dir];
        for (name, rows) in f.names.iter().zip(&f.rows) {
            let bytes = fs_err::metadata(tmp.join(dir).join(name)).map_or(0, |m| m.len());
            by_type
                .entry(rt)
                .or_default()
                .push(new_file(dir, name, *rows, bytes));
        }
    }
    let home = Location::Local(out.to_path_buf());
    let tables: Vec<delta::TableCommit> = by_type
        .into_iter()
        .map(|(name, files)| delta::TableCommit {
            partition_columns: partition_columns(opts, name),
            remove: Vec::new(),
            deletions: Vec::new(),
            base: None,
            home: delta::table_url(&home, name).ok(),
            name: name.to_string(),
            files,
        })
        .collect();
    let props = properties(version.release());
    let made_in = Location::Local(tmp.to_path_buf());
    let results = delta::commit_all(&made_in, &tables, mode(opts), &props);
    crate::dataset::commit::failpoint("table-made");
    for (t, r) in tables.iter().zip(results) {
        let made = tmp.join(&t.name);
        match r {
            Ok(version) => match fs_err::rename(&made, out.join(&t.name)) {
                Ok(()) => {
                    let rec = record.types.entry(t.name.clone()).or_default();
                    rec.table_version = Some(version);
                    committed.push(t.name.clone());
                }
                // The folder is there now: this run's files go in as into any table's.
                Err(_) => {
                    let _ = fs_err::remove_dir_all(made.join(delta::LOG_DIR));
                }
            },
            Err(e) => {
                failed.push((t.name.clone(), e));
            }
        }
    }
    (committed, failed)
}

/// One commit per type, all at once (with a merge's rewritten files, see
/// [`deletions_for_merge`]); `undo` takes away the files of the types not committed. Returns
/// the types committed and those that failed.
fn commit_types(
    dataset: &Location,
    mut by_type: BTreeMap<String, Vec<NewFile>>,
    plan: Option<&Plan>,
    opts: &ConvertOptions,
    version: FhirVersion,
    record: &mut RunRecord,
    undo: impl Fn(&str),
) -> Result<Outcome> {
    let mut deletions = deletions_for_merge(dataset, plan, record, &mut by_type)?;
    let props = properties(version.release());
    let tables: Vec<delta::TableCommit> = by_type
        .into_iter()
        .map(|(name, files)| delta::TableCommit {
            partition_columns: partition_columns(opts, &name),
            remove: Vec::new(),
            deletions: deletions.remove(&name).unwrap_or_default(),
            base: plan.and_then(|p| p.bases.get(&name).cloned()),
            home: None,
            name,
            files,
        })
        .collect();
    let results = delta::commit_all(dataset, &tables, mode(opts), &props);
    let (mut committed, mut failed) = (Vec::new(), Vec::new());
    for (t, r) in tables.iter().zip(results) {
        match r {
            Ok(version) => {
                record
                    .types
                    .entry(t.name.clone())
                    .or_default()
                    .table_version = Some(version);
                committed.push(t.name.clone());
            }
            Err(e) => {
                undo(&t.name);
                failed.push((t.name.clone(), e));
            }
        }
    }
    Ok((committed, failed))
}

/// A run's commits as its result: the first failure, naming the tables that were committed.
fn finish(mut committed: Vec<String>, failed: Vec<(String, anyhow::Error)>) -> Result<()> {
    let Some((_, e)) = failed.into_iter().next() else {
        return Ok(());
    };
    committed.sort();
    let done = match committed.is_empty() {
        true => "nothing of this run was committed".to_string(),
        false => format!(
            "these tables of this run were committed: {}; the others were not",
            committed.join(", ")
        ),
    };
    Err(e.context(done))
}

/// Commits a finished run on an object store: its uploads completed, a commit per type, then
/// the rejects (local files) and the run record.
pub fn remote(
    remote: &Remote,
    written: FxHashMap<PathBuf, FolderFiles>,
    rejects: &[PathBuf],
    opts: &ConvertOptions,
    version: FhirVersion,
    record: &mut RunRecord,
    plan: Option<&Plan>,
) -> Result<()> {
    let mut by_type: BTreeMap<String, Vec<NewFile>> = BTreeMap::new();
    let mut paths: BTreeMap<String, Vec<ObjPath>> = BTreeMap::new();
    let mut uploads = Vec::new();
    for (dir, f) in written {
        let rt = folder_type(&dir);
        for ((name, rows), upload) in f.names.iter().zip(&f.rows).zip(f.pending) {
            by_type
                .entry(rt.clone())
                .or_default()
                .push(new_file(&dir, name, *rows, upload.bytes));
            paths
                .entry(rt.clone())
                .or_default()
                .push(upload.path.clone());
            uploads.push(upload);
        }
    }
    let all: Vec<ObjPath> = paths.values().flatten().cloned().collect();
    // Every type of the run is marked before its files appear, so that no reader takes them for
    // a plain folder's where the table has no version yet (readers look at the mark only
    // there): one put per type, at once, instead of listing each table's log first.
    let markers: Vec<ObjPath> = by_type
        .keys()
        .map(|rt| remote.path(&format!("{rt}/{}", layout::UNCOMMITTED)))
        .collect();
    let marked = block_on(futures::future::try_join_all(markers.iter().map(|p| {
        remote
            .store
            .put(p, object_store::PutPayload::from_static(b""))
    })));
    if let Err(e) = marked {
        abort_all(uploads);
        return Err(remote
            .explain(e, &markers[0])
            .context("nothing of this run was committed"));
    }
    // The commit (the uploads completed, a commit per type); then the marks go, committed or
    // not (a failure took the files back).
    let result = (|| -> Result<()> {
        if let Some((path, e)) = complete_all(uploads) {
            let _ = remote.delete(all);
            return Err(remote
                .explain(e, &path)
                .context("nothing of this run was committed"));
        }
        crate::dataset::commit::failpoint("files-placed");
        // One Parquet schema per commit: the run's files of a type that hold fewer columns than
        // the others are widened, complete but not yet named by the log, so no reader sees them
        // rewritten.
        for (rt, files) in by_type.iter_mut() {
            let objects: Vec<DataFile> = paths[rt]
                .iter()
                .zip(files.iter())
                .map(|(p, f)| DataFile::Remote {
                    path: p.clone(),
                    size: f.bytes,
                })
                .collect();
            let started = std::time::Instant::now();
            let done = super::unify_type(rt, &objects, &[], Some(remote), opts, version);
            let done = match done {
                Ok(d) => d,
                Err(e) => {
                    let _ = remote.delete(all);
                    return Err(e.context("nothing of this run was committed"));
                }
            };
            if done.widened > 0 {
                let rec = record.types.entry(rt.clone()).or_default();
                rec.add_widened(&done, started.elapsed().as_secs_f64());
                for (p, f) in paths[rt].iter().zip(files.iter_mut()) {
                    f.bytes = block_on(remote.store.head(p))
                        .map_err(|e| remote.explain(e, p))?
                        .size;
                }
            }
        }
        let dataset = Location::Remote(remote.clone());
        let (committed, failed) =
            commit_types(&dataset, by_type, plan, opts, version, record, |rt| {
                let _ = remote.delete(paths.get(rt).cloned().unwrap_or_default());
            })?;
        finish(committed, failed)?;

        // The rejects: replaced, or added to with --append.
        if !opts.append {
            let old: Vec<ObjPath> = remote
                .list(REJECTS_DIR)?
                .into_iter()
                .map(|m| m.location)
                .collect();
            remote.delete(old)?;
        }
        for local in rejects {
            let name = local.file_name().unwrap_or_default().to_string_lossy();
            let data =
                fs_err::read(local).with_context(|| format!("cannot read {}", local.display()))?;
            remote.put(&format!("{REJECTS_DIR}/{name}"), data)?;
        }
        let previous = remote
            .read(RUN_RECORD)?
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let text = record.render(previous.as_deref())?;
        remote.put(RUN_RECORD, text.into_bytes())
    })();
    let _ = remote.delete(markers);
    result
}
