//! One Parquet schema for all the files of a table.
//!
//! Files written with `--columns present` hold the leaf columns that have a value in them, so
//! two files of one table can hold different parts of the typed schema: a column that first
//! has a value late in a run starts a new file, partitions fill different elements, an
//! `--append` run brings elements earlier runs did not have. Readers given the table's schema
//! fill the rest with NULL, but many readers take one file's schema for all of a folder:
//! DuckDB's `read_parquet` and `pyarrow.dataset` leave out the fields only other files hold,
//! without a word; polars stops with an error. So after a run, the files of each table it
//! wrote are made to agree: every file holding fewer columns than the table's files together
//! is rewritten with their union, the values it has unchanged and the columns it gains all
//! NULL ([`widen`]).
//!
//! This costs nothing where the files already agree (a footer read each). Where they do not,
//! the narrower files are read and written again: one Parquet file at a time, never the
//! input. A rewritten file replaces the old one whole (a rename; on an object store, the
//! completion of an upload to the same name), and holds the same rows.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{ChunkReader, FileReader, SerializedFileReader};

use super::DataFile;
use crate::store::{block_on, MultipartSink, Remote, RemoteFile};

/// The leaf columns of a table's typed schema, by their Parquet path (`code.coding.list.item
/// .system`), and the schema.
pub struct Leaves {
    typed: SchemaRef,
    index: HashMap<String, usize>,
}

impl Leaves {
    pub fn new(typed: SchemaRef) -> Result<Self> {
        let descr = ArrowSchemaConverter::new().convert(&typed)?;
        let index = descr
            .columns()
            .iter()
            .enumerate()
            .map(|(i, c)| (c.path().string(), i))
            .collect();
        Ok(Leaves { typed, index })
    }

    /// Which of the typed schema's leaf columns `file` holds; `None` for a file with a column
    /// the typed schema does not have (not written by this version: left alone).
    pub fn of_file(&self, file: &DataFile, remote: Option<&Remote>) -> Result<Option<Vec<bool>>> {
        let what = || format!("cannot read the Parquet footer of {}", show(file, remote));
        match file {
            DataFile::Local(path) => self.of_reader(File::open(path).with_context(what)?),
            DataFile::Remote { path, size } => {
                let remote = remote.context("a file on a store needs its store")?;
                self.of_reader(RemoteFile::new(remote, path.clone(), *size))
            }
        }
        .with_context(what)
    }

    fn of_reader<R: ChunkReader + 'static>(&self, r: R) -> Result<Option<Vec<bool>>> {
        let reader = SerializedFileReader::new(r)?;
        let descr = reader.metadata().file_metadata().schema_descr_ptr();
        let mut kept = vec![false; self.index.len()];
        for c in descr.columns() {
            match self.index.get(&c.path().string()) {
                Some(&i) => kept[i] = true,
                None => return Ok(None),
            }
        }
        Ok(Some(kept))
    }

    /// The Arrow schema of the leaf columns `kept`: the typed schema, pruned.
    fn schema(&self, kept: &[bool]) -> SchemaRef {
        crate::schema::node::prune_schema(&self.typed, kept)
    }
}

/// What [`unify`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Unified {
    /// Files rewritten with more columns.
    pub widened: usize,
    /// Their sizes before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Makes the files `mine` hold the columns of every file in `mine` and `others` together:
/// each of `mine` that holds fewer is rewritten in place ([`widen`]). `others` only add to the
/// union (an earlier run's files, when the run's own are not yet published). Files this
/// version did not write (a column outside the typed schema) are left as they are. `remote` is
/// the store of files that are on one.
pub fn unify(
    leaves: &Leaves,
    mine: &[DataFile],
    others: &[DataFile],
    remote: Option<&Remote>,
    props: &WriterProperties,
) -> Result<Unified> {
    let mut union: Option<Vec<bool>> = None;
    let mut shapes = Vec::new();
    for (i, file) in mine.iter().chain(others).enumerate() {
        let Some(kept) = leaves.of_file(file, remote)? else {
            continue;
        };
        match &mut union {
            None => union = Some(kept.clone()),
            Some(u) => u.iter_mut().zip(&kept).for_each(|(u, k)| *u |= *k),
        }
        if i < mine.len() {
            shapes.push((file, kept));
        }
    }
    let mut done = Unified::default();
    let Some(union) = union else {
        return Ok(done);
    };
    let schema = leaves.schema(&union);
    for (file, kept) in shapes {
        if kept != union {
            let (before, after) = widen(file, remote, &schema, props)?;
            done.widened += 1;
            done.bytes_before += before;
            done.bytes_after += after;
        }
    }
    Ok(done)
}

fn show(file: &DataFile, remote: Option<&Remote>) -> String {
    match (file, remote) {
        (DataFile::Local(p), _) => p.display().to_string(),
        (DataFile::Remote { path, .. }, Some(r)) => r.object_url(path),
        (DataFile::Remote { path, .. }, None) => path.to_string(),
    }
}

/// Rewrites `file` with the columns of `schema` (a part of the typed schema holding all of
/// the file's): its rows and values as they were, the columns it did not have NULL. A local
/// file is written beside it and renamed over it; one on a store is uploaded to its own name,
/// which replaces it when the upload completes. Its sizes before and after.
pub fn widen(
    file: &DataFile,
    remote: Option<&Remote>,
    schema: &SchemaRef,
    props: &WriterProperties,
) -> Result<(u64, u64)> {
    let what = || format!("cannot rewrite {} with more columns", show(file, remote));
    match file {
        DataFile::Local(path) => {
            let before = fs_err::metadata(path).with_context(what)?.len();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let tmp = path.with_file_name(format!(".{name}.widening"));
            let result = (|| -> Result<u64> {
                let out = std::io::BufWriter::new(File::create(&tmp)?);
                let out = rewrite(File::open(path)?, out, schema, props)?;
                out.into_inner()?.sync_all()?;
                fs_err::rename(&tmp, path)?;
                Ok(fs_err::metadata(path)?.len())
            })();
            match result {
                Ok(after) => Ok((before, after)),
                Err(e) => {
                    let _ = fs_err::remove_file(&tmp);
                    Err(e).with_context(what)
                }
            }
        }
        DataFile::Remote { path, size } => {
            let remote = remote.context("a file on a store needs its store")?;
            let result = (|| -> Result<u64> {
                let source = RemoteFile::new(remote, path.clone(), *size);
                let sink = MultipartSink::create(remote, path.clone())?;
                let upload = rewrite(source, sink, schema, props)?.finish()?;
                let bytes = upload.bytes;
                block_on(upload.complete()).map_err(|e| remote.explain(e, path))?;
                Ok(bytes)
            })();
            Ok((*size, result.with_context(what)?))
        }
    }
}

/// The rows of the Parquet file `source`, written to `sink` with the columns of `schema`.
fn rewrite<R: ChunkReader + 'static, W: std::io::Write + Send>(
    source: R,
    sink: W,
    schema: &SchemaRef,
    props: &WriterProperties,
) -> Result<W> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(source)?
        .with_batch_size(8192)
        .build()?;
    let options = ArrowWriterOptions::new()
        .with_properties(props.clone())
        .with_skip_arrow_metadata(true);
    let mut writer = ArrowWriter::try_new_with_options(sink, schema.clone(), options)?;
    for batch in reader {
        writer.write(&crate::encode::to_table_schema(batch?, schema)?)?;
    }
    Ok(writer.into_inner()?)
}

/// The Parquet files of the table `name` of a dataset: under a local folder, or under a
/// store's prefix (the dataset's); none if there are none.
pub fn table_files(dataset: &crate::store::Location, name: &str) -> Result<Vec<DataFile>> {
    let mut files: Vec<DataFile> = match dataset {
        crate::store::Location::Local(dir) => parquet_files(&dir.join(name))?
            .into_iter()
            .map(DataFile::Local)
            .collect(),
        crate::store::Location::Remote(remote) => remote
            .list(name)?
            .into_iter()
            .filter(|o| o.location.as_ref().ends_with(".parquet"))
            .map(|o| DataFile::Remote {
                path: o.location,
                size: o.size,
            })
            .collect(),
    };
    files.sort_by_key(|f| match f {
        DataFile::Local(p) => p.display().to_string(),
        DataFile::Remote { path, .. } => path.to_string(),
    });
    Ok(files)
}

/// The Parquet files under `dir`, at any depth (partition folders), sorted; none if `dir` does
/// not exist. What a killed [`widen`] left beside them (`.<name>.widening`, never read as
/// data) is removed.
pub fn parquet_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    if dir.is_dir() {
        super::local_files(dir, &mut files)?;
        remove_leftovers(dir);
    }
    files.sort();
    Ok(files)
}

fn remove_leftovers(dir: &Path) {
    for e in fs_err::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            remove_leftovers(&p);
        } else if p.extension().is_some_and(|x| x == "widening") {
            let _ = fs_err::remove_file(p);
        }
    }
}
