//! `vacuum --purge`: a table's files that hold deleted rows (the deletion vectors a merge
//! wrote) rewritten without them, one commit per table (operation OPTIMIZE, as Delta's
//! `REORG TABLE ... APPLY (PURGE)`), so that the current version is its Parquet files as they
//! are. Engines that read a table's folder as plain Parquet need that (the `warehouse`
//! statements other than DuckDB's); the vacuum that follows, with `--retain 0`, removes the
//! files the rewrite replaced and the vectors.

use anyhow::{Context, Result};
use arrow::array::RecordBatchReader;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

use super::delta::{self, Mode, NewFile, SnapshotFile, TableCommit};
use super::DataFile;
use crate::store::{Location, RemoteFile};

/// What a purge did to a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purged {
    /// Files rewritten without their deleted rows.
    pub files: usize,
    /// Deleted rows left out.
    pub rows: u64,
    /// The version committed (`None`: a dry run).
    pub version: Option<u64>,
}

/// The Parquet writer settings of a rewritten file, from its resource type, FHIR release
/// (`4.0.1`) and schema.
pub type Properties<'a> = &'a dyn Fn(&str, &str, &arrow::datatypes::Schema) -> WriterProperties;

/// Rewrites the files of table `name` that have deletion vectors (see the module
/// documentation); `None` where no file has one. With `dry_run`, counts and writes nothing.
/// The caller holds the dataset's lock.
pub fn purge(
    dataset: &Location,
    name: &str,
    props: Properties,
    run_id: &str,
    dry_run: bool,
) -> Result<Option<Purged>> {
    let (snap, base) = delta::snapshot_and_base(dataset, name)?;
    let with: Vec<&SnapshotFile> = snap.files.iter().filter(|f| f.deleted.is_some()).collect();
    if with.is_empty() {
        return Ok(None);
    }
    let rows = with
        .iter()
        .filter_map(|f| f.deleted.as_ref())
        .map(|d| d.len())
        .sum();
    if dry_run {
        return Ok(Some(Purged {
            files: with.len(),
            rows,
            version: None,
        }));
    }
    let release = snap
        .properties
        .get(super::FHIR_VERSION_PROPERTY)
        .cloned()
        .unwrap_or_else(|| crate::schema::FhirVersion::default().release().to_string());
    let props = |schema: &arrow::datatypes::Schema| props(name, &release, schema);
    let mut files = Vec::new();
    for (k, f) in with.iter().enumerate() {
        let file_name = super::layout::part_file(run_id, k);
        if let Some(new) = rewrite(dataset, name, f, &file_name, &props)? {
            files.push(new);
        }
    }
    let table = TableCommit {
        name: name.to_string(),
        files,
        partition_columns: snap.partition_columns.clone(),
        remove: with.iter().map(|f| f.path.clone()).collect(),
        deletions: Vec::new(),
        base: Some(base),
        home: None,
    };
    let version = delta::commit(dataset, &table, Mode::Purge, &snap.properties)?;
    Ok(Some(Purged {
        files: with.len(),
        rows,
        version: Some(version),
    }))
}

/// A table file without the rows its deletion vector names, written beside it as
/// `file_name` (no reader sees it before the commit); `None` where no row is left.
fn rewrite(
    dataset: &Location,
    table: &str,
    f: &SnapshotFile,
    file_name: &str,
    props: &dyn Fn(&arrow::datatypes::Schema) -> WriterProperties,
) -> Result<Option<NewFile>> {
    let what = || format!("cannot rewrite {table}/{} in {}", f.path, dataset.display());
    let reader = match (DataFile::of(dataset, table, f), dataset) {
        (DataFile::Local(p), _) => {
            let file = fs_err::File::open(&p)?.into_parts().0;
            super::deletion::reader(file, f.selection()).with_context(what)?
        }
        (DataFile::Remote { path, size }, Location::Remote(remote)) => {
            let file = RemoteFile::new(remote, path, size);
            super::deletion::reader(file, f.selection()).with_context(what)?
        }
        (DataFile::Remote { .. }, Location::Local(_)) => unreachable!("a local dataset"),
    };
    let schema = reader.schema();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema.clone(), Some(props(&schema)))?;
    let mut rows = 0u64;
    for batch in reader {
        let batch = batch.with_context(what)?;
        rows += batch.num_rows() as u64;
        w.write(&batch)?;
    }
    w.close()?;
    if rows == 0 {
        return Ok(None);
    }
    let rel = match f.path.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{file_name}"),
        None => file_name.to_string(),
    };
    let bytes = buf.len() as u64;
    dataset
        .write_file(&format!("{table}/{rel}"), buf)
        .with_context(|| format!("cannot write {table}/{rel} in {}", dataset.display()))?;
    Ok(Some(NewFile {
        path: rel,
        bytes,
        rows: Some(rows),
        deletion_vector: None,
    }))
}
