//! A converted dataset as its readers see it: per resource type, a table of Parquet files, in a
//! local folder or under a prefix of an object store. A type's folder is a Delta Lake table
//! (see [`delta`]: its log names the table's files, at each version) or, written with
//! `--format parquet`, a plain folder whose Parquet files are the table. `sql`, `view` and
//! `to-ndjson` read through here; `convert` and `upload` write what it reads.

pub mod commit;
pub mod deletion;
pub mod delta;
pub mod history;
pub mod layout;
pub mod lock;
pub mod provider;
pub mod purge;
pub mod schema_json;
pub mod unify;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use object_store::path::Path as ObjPath;

use crate::schema::FhirVersion;
use crate::store::{Location, Remote};

/// How a dataset's tables are kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// A Delta Lake table per type: commits, versions, one truth of which files are the table.
    #[default]
    Delta,
    /// A plain folder of Parquet files per type (a one-shot snapshot: no versions, no merge).
    Parquet,
}

impl crate::choice::Choice for Format {
    const CHOICES: &'static [(Self, &'static str, &'static str)] = &[
        (Format::Delta, "delta", "A Delta Lake table per type: commits, versions, one truth of which files are the table"),
        (Format::Parquet, "parquet", "A plain folder of Parquet files per type (a one-shot snapshot: no versions, no merge)"),
    ];
}

/// One resource type's files.
#[derive(Debug, Clone)]
pub struct Table {
    pub name: String,
    /// The folder's URL (`file:///...` or `s3://...`), with a trailing `/`, as DataFusion
    /// lists it.
    pub url: String,
    /// Hive partition columns (`effective_year=2019/` gives `effective_year`).
    pub partitions: Vec<String>,
    /// Its Parquet files, sorted.
    pub files: Vec<DataFile>,
    /// A Delta table: the version read and each file's partition values (in the order of
    /// `partitions`). `None`: a plain folder.
    pub delta: Option<delta::Snapshot>,
    /// The FHIR version of the dataset (R4 where it records none).
    pub fhir_version: FhirVersion,
}

/// A Parquet file of a table.
#[derive(Debug, Clone)]
pub enum DataFile {
    Local(PathBuf),
    Remote { path: ObjPath, size: u64 },
}

impl DataFile {
    /// Where the file `f` of table `table` (as the table's log names it) is.
    pub fn of(dataset: &Location, table: &str, f: &delta::SnapshotFile) -> DataFile {
        match dataset {
            Location::Local(dir) => {
                let mut p = dir.join(table);
                p.extend(f.path.split('/'));
                DataFile::Local(p)
            }
            Location::Remote(remote) => DataFile::Remote {
                path: remote.path(&format!("{table}/{}", f.path)),
                size: f.bytes,
            },
        }
    }
}

/// A folder named after a resource type of any version: a table (its version is checked when
/// the dataset's version is known).
fn is_table(name: &str) -> bool {
    FhirVersion::any_has_resource(name)
}

/// The table property naming the FHIR release a table holds (`4.0.1`).
pub const FHIR_VERSION_PROPERTY: &str = "fhir2parquet.fhirVersion";

/// The FHIR version a dataset's run record names, if it has one.
fn run_record_version(dataset: &Location) -> Result<Option<FhirVersion>> {
    let text = match dataset {
        Location::Local(dir) => match fs_err::read(dir.join(layout::RUN_RECORD)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        },
        Location::Remote(remote) => match remote.read(layout::RUN_RECORD)? {
            Some(bytes) => bytes.to_vec(),
            None => return Ok(None),
        },
    };
    let record: serde_json::Value = match serde_json::from_slice(&text) {
        Ok(v) => v,
        // A record being rewritten or damaged says nothing; the tables' logs still do.
        Err(_) => return Ok(None),
    };
    Ok(record["fhir_version"]
        .as_str()
        .and_then(FhirVersion::from_release))
}

/// The one FHIR version of a dataset's tables: the one their Delta logs record, else (plain
/// folders) the run record's; `None` for a dataset that records none. Tables of different
/// versions, or a table that is no resource type of the version: an error naming both.
fn version_of(dataset: &Location, tables: &[Table]) -> Result<Option<FhirVersion>> {
    let mut seen: Option<(FhirVersion, &str)> = None;
    for t in tables {
        let Some(release) = t
            .delta
            .as_ref()
            .and_then(|s| s.properties.get(FHIR_VERSION_PROPERTY))
        else {
            continue;
        };
        let Some(v) = FhirVersion::from_release(release) else {
            bail!(
                "{} in {} holds FHIR {release}, which this version of fhir2parquet does not \
                 read (it reads 4.0.1, 4.3.0 and 5.0.0)",
                t.name,
                dataset.display()
            );
        };
        match seen {
            Some((first, name)) if first != v => bail!(
                "{} mixes FHIR versions: {name} holds {} ({}) and {} holds {} ({}); a dataset \
                 holds one version: convert each version into a folder of its own",
                dataset.display(),
                first,
                first.release(),
                t.name,
                v,
                v.release()
            ),
            Some(_) => {}
            None => seen = Some((v, &t.name)),
        }
    }
    let version = match seen {
        Some((v, _)) => Some(v),
        None => run_record_version(dataset)?,
    };
    if let Some(v) = version {
        if let Some(t) = tables.iter().find(|t| !v.has_resource(&t.name)) {
            bail!(
                "{} holds FHIR {v} ({}) data, and {} is no resource type of {v}: remove that \
                 folder, or convert it into a dataset of its own version",
                dataset.display(),
                v.release(),
                t.name
            );
        }
    }
    Ok(version)
}

/// The FHIR version of the data already in `dataset` (what a writer adding to it must match):
/// `None` when it holds no tables or records no version.
pub fn fhir_version(dataset: &Location) -> Result<Option<FhirVersion>> {
    if let Some(v) = run_record_version(dataset)? {
        return Ok(Some(v));
    }
    let (mut tables, kinds) = match listed(dataset) {
        Ok(found) => found,
        Err(_) => return Ok(None),
    };
    read_logs(dataset, &mut tables, &kinds, None)?;
    version_of(dataset, &tables)
}

/// The resource tables of a dataset at their current versions, sorted by name; an error when
/// there are none.
pub fn tables(dataset: &Location) -> Result<Vec<Table>> {
    tables_as_of(dataset, None)
}

/// The resource tables of a dataset as they were at `as_of` (Delta tables only; `None`: the
/// current version), sorted by name; an error when there are none.
pub fn tables_as_of(dataset: &Location, as_of: Option<delta::AsOf>) -> Result<Vec<Table>> {
    let (mut tables, kinds) = listed(dataset)?;
    read_logs(dataset, &mut tables, &kinds, as_of)?;
    if tables.is_empty() {
        bail!(
            "{} holds no resource tables: convert some NDJSON into it first",
            dataset.display()
        );
    }
    let version = version_of(dataset, &tables)?.unwrap_or_default();
    for t in &mut tables {
        t.fhir_version = version;
    }
    Ok(tables)
}

/// Reads the logs of the Delta tables among `tables` (`kinds`: which are), at once, and takes
/// their files from them; with `as_of`, a plain folder is an error (it keeps no versions).
fn read_logs(
    dataset: &Location,
    tables: &mut [Table],
    kinds: &[bool],
    as_of: Option<delta::AsOf>,
) -> Result<()> {
    let mut logged = Vec::new();
    for (i, (t, is_delta)) in tables.iter().zip(kinds).enumerate() {
        if *is_delta {
            logged.push(i);
        } else if as_of.is_some() {
            bail!(
                "{} in {} is a plain Parquet folder (written with --format parquet), which keeps \
                 no versions: --as-of reads Delta tables only",
                t.name,
                dataset.display()
            );
        }
    }
    let names: Vec<String> = logged.iter().map(|&i| tables[i].name.clone()).collect();
    for (&i, snap) in logged.iter().zip(delta::snapshots(dataset, &names, as_of)) {
        use_log(dataset, &mut tables[i], snap?)?;
    }
    Ok(())
}

/// The resource tables found in a dataset's folders (no log read), sorted by name, each with
/// whether it is a Delta table.
fn listed(dataset: &Location) -> Result<(Vec<Table>, Vec<bool>)> {
    let (tables, with_log) = match dataset {
        Location::Local(dir) => (local_tables(dir)?, None),
        Location::Remote(remote) => {
            let (tables, logs) = remote_tables(remote)?;
            (tables, Some(logs))
        }
    };
    let kinds = tables
        .iter()
        .map(|t| match &with_log {
            Some(logs) => Ok(logs.contains(&t.name)),
            None => delta::is_table(dataset, &t.name),
        })
        .collect::<Result<Vec<bool>>>()?;
    Ok((tables, kinds))
}

/// The names of a dataset's resource tables, each with whether it is a Delta table, found
/// without reading a log (what a writer checks before it adds to them).
pub fn table_kinds(dataset: &Location) -> Result<Vec<(String, bool)>> {
    let (tables, kinds) = listed(dataset)?;
    Ok(tables.into_iter().map(|t| t.name).zip(kinds).collect())
}

/// Finishes a publish that a killed run left, if no live writer holds the dataset: readers
/// never see a half-published dataset for longer than a writer is publishing it.
pub fn finish_abandoned_publish(dataset: &Path) {
    let pending = fs_err::read_dir(dataset).ok().is_some_and(|mut it| {
        it.any(|e| {
            e.is_ok_and(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(commit::JOURNAL_PREFIX)
            })
        })
    });
    if pending {
        if let Some(_lock) = lock::try_acquire(dataset, "reader") {
            if let Err(e) = commit::recover(dataset) {
                eprintln!("warning: cannot finish an interrupted publish: {e:#}");
            }
        }
    }
}

/// Replaces the files found in a table's folder by those its Delta log names.
fn use_log(dataset: &Location, t: &mut Table, snap: delta::Snapshot) -> Result<()> {
    let dataset = &match dataset {
        Location::Local(dir) => Location::Local(
            dir.canonicalize()
                .with_context(|| format!("cannot read {}", dir.display()))?,
        ),
        other => other.clone(),
    };
    t.files = snap
        .files
        .iter()
        .map(|f| DataFile::of(dataset, &t.name, f))
        .collect();
    t.partitions = snap.partition_columns.clone();
    t.delta = Some(snap);
    Ok(())
}

fn local_tables(dataset: &Path) -> Result<Vec<Table>> {
    finish_abandoned_publish(dataset);
    let entries = fs_err::read_dir(dataset).with_context(|| {
        format!(
            "cannot read {}: give a folder written by `fhir2parquet convert`",
            dataset.display()
        )
    })?;
    let mut tables = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_dir() && is_table(&name) {
            let dir = entry.path().canonicalize()?;
            if dir.join(layout::UNCOMMITTED).exists() && !delta::local_has_version(&dir) {
                warn_uncommitted(&name, &dir.display().to_string());
                continue;
            }
            let mut files = Vec::new();
            local_files(&dir, &mut files)?;
            files.sort();
            let partitions = files
                .first()
                .map(|f| partitions_of(f.strip_prefix(&dir).unwrap_or(f).to_string_lossy()))
                .unwrap_or_default();
            tables.push(Table {
                name,
                url: format!("{}/", dir.display()),
                partitions,
                files: files.into_iter().map(DataFile::Local).collect(),
                delta: None,
                fhir_version: FhirVersion::default(),
            });
        }
    }
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(tables)
}

/// A type's folder holding files placed for a table's first commit that never came (a run
/// killed between placing them and committing): no table, and the reader says so.
fn warn_uncommitted(name: &str, folder: &str) {
    eprintln!(
        "warning: {name} ({folder}) holds files of a run that did not commit this table's first \
         version (killed?): they are not read; the next convert of {name} replaces them, \
         `fhir2parquet vacuum` removes them"
    );
}

fn local_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in fs_err::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == delta::LOG_DIR) {
                continue;
            }
            local_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    Ok(())
}

/// The `k=v` folders of a file's path inside its table (`/`- or `\`-separated).
fn partitions_of(rel: impl AsRef<str>) -> Vec<String> {
    let parts: Vec<&str> = rel.as_ref().split(['/', '\\']).collect();
    parts[..parts.len().saturating_sub(1)]
        .iter()
        .filter_map(|p| p.split_once('=').map(|(k, _)| k.to_string()))
        .collect()
}

/// The tables of a prefix, and the names of those with a Delta log (one listing for both).
fn remote_tables(remote: &Remote) -> Result<(Vec<Table>, std::collections::HashSet<String>)> {
    let mut tables: Vec<Table> = Vec::new();
    let mut logs = std::collections::HashSet::new();
    let mut uncommitted = std::collections::HashSet::new();
    let prefix_parts = remote.prefix.parts().count();
    let mut objects = remote.list("")?;
    objects.sort_by(|a, b| a.location.cmp(&b.location));
    for o in objects {
        let parts: Vec<String> = o
            .location
            .parts()
            .skip(prefix_parts)
            .map(|p| p.as_ref().to_string())
            .collect();
        let (Some(name), Some(file)) = (parts.first(), parts.last()) else {
            continue;
        };
        let in_log = parts.get(1).is_some_and(|p| p == delta::LOG_DIR);
        if parts.len() == 2 && file == layout::UNCOMMITTED {
            uncommitted.insert(name.clone());
            continue;
        }
        if parts.len() < 2 || !is_table(name) || !(in_log || file.ends_with(".parquet")) {
            continue;
        }
        if tables.last().is_none_or(|t| &t.name != name) {
            tables.push(Table {
                name: name.clone(),
                url: remote.url(&format!("{name}/")),
                partitions: partitions_of(parts[1..].join("/")),
                files: Vec::new(),
                delta: None,
                fhir_version: FhirVersion::default(),
            });
        }
        let t = tables.last_mut().expect("pushed above");
        if in_log {
            logs.insert(name.clone());
            continue;
        }
        t.files.push(DataFile::Remote {
            path: o.location,
            size: o.size,
        });
    }
    tables.retain(|t| {
        let skip = uncommitted.contains(&t.name) && !logs.contains(&t.name);
        if skip {
            warn_uncommitted(&t.name, &t.url);
        }
        !skip
    });
    Ok((tables, logs))
}

#[cfg(test)]
mod tests {
    #[test]
    fn partition_columns_from_paths() {
        assert_eq!(
            super::partitions_of("effective_year=2019/part-1.parquet"),
            vec!["effective_year"]
        );
        assert!(super::partitions_of("part-1.parquet").is_empty());
    }
}
