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
//! the narrower files are read and written again: one Parquet file of the run at a time,
//! never the input. A rewritten file replaces the old in one rename, and holds the same rows.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::datatypes::{Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};

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

    /// Which of the typed schema's leaf columns the file at `path` holds; `None` for a file
    /// with a column the typed schema does not have (not written by this version: left alone).
    pub fn of_file(&self, path: &Path) -> Result<Option<Vec<bool>>> {
        let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        let reader = SerializedFileReader::new(file)
            .with_context(|| format!("{} is not a Parquet file", path.display()))?;
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
        let fields = crate::schema::node::prune_fields(self.typed.fields(), kept, &mut 0);
        Arc::new(Schema::new_with_metadata(
            fields,
            self.typed.metadata().clone(),
        ))
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
/// version did not write (a column outside the typed schema) are left as they are.
pub fn unify(
    leaves: &Leaves,
    mine: &[PathBuf],
    others: &[PathBuf],
    props: &WriterProperties,
) -> Result<Unified> {
    let mut union: Option<Vec<bool>> = None;
    let mut shapes = Vec::new();
    for (i, path) in mine.iter().chain(others).enumerate() {
        let Some(kept) = leaves.of_file(path)? else {
            continue;
        };
        match &mut union {
            None => union = Some(kept.clone()),
            Some(u) => u.iter_mut().zip(&kept).for_each(|(u, k)| *u |= *k),
        }
        if i < mine.len() {
            shapes.push((path, kept));
        }
    }
    let mut done = Unified::default();
    let Some(union) = union else {
        return Ok(done);
    };
    let schema = leaves.schema(&union);
    for (path, kept) in shapes {
        if kept != union {
            let (before, after) = widen(path, &schema, props)?;
            done.widened += 1;
            done.bytes_before += before;
            done.bytes_after += after;
        }
    }
    Ok(done)
}

/// Rewrites the Parquet file at `path` with the columns of `schema` (a part of the typed
/// schema holding all of the file's): its rows and values as they were, the columns it did not
/// have NULL. The new file is written beside it and renamed over it. Its sizes before and
/// after.
pub fn widen(path: &Path, schema: &SchemaRef, props: &WriterProperties) -> Result<(u64, u64)> {
    let what = || format!("cannot rewrite {} with more columns", path.display());
    let before = std::fs::metadata(path).with_context(what)?.len();
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.widening"));
    let result = (|| -> Result<u64> {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path)?)?
            .with_batch_size(8192)
            .build()?;
        let options = parquet::arrow::arrow_writer::ArrowWriterOptions::new()
            .with_properties(props.clone())
            .with_skip_arrow_metadata(true);
        let out = std::io::BufWriter::new(File::create(&tmp)?);
        let mut writer = ArrowWriter::try_new_with_options(out, schema.clone(), options)?;
        for batch in reader {
            writer.write(&crate::encode::to_table_schema(batch?, schema)?)?;
        }
        writer.into_inner()?.into_inner()?.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(std::fs::metadata(path)?.len())
    })();
    match result {
        Ok(after) => Ok((before, after)),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e).with_context(what)
        }
    }
}

/// The Parquet files under `dir`, at any depth (partition folders), sorted; none if `dir` does
/// not exist.
pub fn parquet_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    if dir.is_dir() {
        super::local_files(dir, &mut files)?;
    }
    files.sort();
    Ok(files)
}
