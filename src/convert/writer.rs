//! Parquet files of one resource type (and partition), rolled at a target size.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::schema::node::OVERFLOW_COLUMN;

/// Values per column written in one go (see [`WriteOptions::properties`]).
const WRITE_BATCH: usize = 8192;

/// Output compression (`--compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    Zstd,
    Snappy,
    Lz4,
    Gzip,
    None,
}

/// How the Parquet files are written.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub codec: Codec,
    pub zstd_level: i32,
    pub target_file_bytes: u64,
    pub row_group_rows: usize,
}

impl WriteOptions {
    pub fn properties(
        &self,
        resource_type: &str,
        fhir_version: &str,
        schema: &arrow::datatypes::Schema,
    ) -> WriterProperties {
        let compression = match self.codec {
            Codec::Zstd => {
                Compression::ZSTD(ZstdLevel::try_new(self.zstd_level).unwrap_or_default())
            }
            Codec::Snappy => Compression::SNAPPY,
            Codec::Lz4 => Compression::LZ4_RAW,
            Codec::Gzip => Compression::GZIP(Default::default()),
            Codec::None => Compression::UNCOMPRESSED,
        };
        let kv = |k: &str, v: &str| KeyValue::new(k.to_string(), v.to_string());
        let mut builder = WriterProperties::builder().set_compression(compression);
        if let Ok(descr) = parquet::arrow::ArrowSchemaConverter::new().convert(schema) {
            for col in descr.columns() {
                let parts = col.path().parts();
                // Extensions and primitive extensions are null in nearly every row: their pages
                // are a few bytes of levels, and a compressor per column costs ~140 KB of memory
                // and its set-up time in every row group. They are written uncompressed.
                let rare = parts.iter().any(|p| {
                    p == "extension"
                        || p == "modifierExtension"
                        || (p.starts_with('_') && p != OVERFLOW_COLUMN)
                });
                if rare && compression != Compression::UNCOMPRESSED {
                    builder = builder
                        .set_column_compression(col.path().clone(), Compression::UNCOMPRESSED);
                }
                // A dictionary does not pay where values are unique or long: the resource id, the
                // narrative's xhtml, the overflow JSON. Building one hashes every value before
                // falling back.
                let unique = parts == ["id"]
                    || parts.last().is_some_and(|p| p == "div")
                    || parts == [OVERFLOW_COLUMN];
                if unique {
                    builder = builder.set_column_dictionary_enabled(col.path().clone(), false);
                }
            }
        }
        builder
            .set_max_row_group_row_count(Some(self.row_group_rows))
            // Values go to a column in runs of this many (the default is 1,024): page limits are
            // checked, and column properties looked up, once per run; a thousand leaves make
            // that per-run work add up. Byte arrays are still cut to the page size.
            .set_write_batch_size(WRITE_BATCH)
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_dictionary_enabled(true)
            .set_created_by(format!("fhir2parquet {}", env!("CARGO_PKG_VERSION")))
            .set_key_value_metadata(Some(vec![
                kv("fhir.version", fhir_version),
                kv("fhir.resourceType", resource_type),
                kv("fhir2parquet.schema_version", crate::schema::SCHEMA_VERSION),
                kv("fhir2parquet.version", env!("CARGO_PKG_VERSION")),
            ]))
            .build()
    }
}

/// `props` with compression off for the leaf columns that hold no value in `batch`, the first
/// of a file. Most of a resource table's thousand columns are empty in most rows, and parquet-rs
/// sets up a compressor (~140 KB, and its time) per column per row group: a column still empty
/// after the first batch of a file is rare, its pages are a few bytes of levels, and not
/// compressing them is the cheapest way to write them.
fn uncompressed_where_empty(props: &WriterProperties, batch: &RecordBatch) -> WriterProperties {
    fn leaves(a: &dyn Array, out: &mut Vec<bool>) {
        match a.data_type() {
            DataType::Struct(_) => {
                let s = a.as_struct();
                for c in s.columns() {
                    leaves(c.as_ref(), out);
                }
            }
            DataType::List(_) => leaves(a.as_list::<i32>().values().as_ref(), out),
            _ => out.push(a.len() == a.null_count()),
        }
    }
    if batch.num_rows() < 100 {
        return props.clone();
    }
    let mut empty = Vec::new();
    for c in batch.columns() {
        leaves(c.as_ref(), &mut empty);
    }
    let Ok(descr) = parquet::arrow::ArrowSchemaConverter::new().convert(batch.schema_ref()) else {
        return props.clone();
    };
    if descr.num_columns() != empty.len() {
        return props.clone();
    }
    let mut builder = props.clone().into_builder();
    for (col, empty) in descr.columns().iter().zip(empty) {
        if empty && props.compression(col.path()) != Compression::UNCOMPRESSED {
            builder = builder.set_column_compression(col.path().clone(), Compression::UNCOMPRESSED);
        }
    }
    builder.build()
}

/// Writes batches to `dir/part-<prefix>-<n>.parquet`, starting a new file past the target size.
pub struct RollingWriter {
    dir: PathBuf,
    prefix: String,
    schema: SchemaRef,
    props: WriterProperties,
    target: u64,
    seq: usize,
    current: Option<ArrowWriter<File>>,
    pub files: Vec<PathBuf>,
    pub bytes: u64,
    /// Leaf columns of the schema: an open file costs memory in proportion (a compressor per column).
    pub leaves: usize,
    /// When the worker last wrote here, for closing the least recently used file.
    pub last_used: u64,
}

impl RollingWriter {
    pub fn new(
        dir: &Path,
        prefix: String,
        schema: SchemaRef,
        props: WriterProperties,
        target: u64,
    ) -> Self {
        RollingWriter {
            dir: dir.to_path_buf(),
            prefix,
            schema: schema.clone(),
            props,
            target,
            seq: 0,
            current: None,
            files: Vec::new(),
            bytes: 0,
            leaves: crate::schema::node::width_and_depth(&schema).0,
            last_used: 0,
        }
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if self.current.is_none() {
            std::fs::create_dir_all(&self.dir)
                .with_context(|| format!("cannot create {}", self.dir.display()))?;
            let path = self
                .dir
                .join(format!("part-{}-{:05}.parquet", self.prefix, self.seq));
            self.seq += 1;
            let file =
                File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
            let props = uncompressed_where_empty(&self.props, batch);
            self.current = Some(ArrowWriter::try_new(
                file,
                self.schema.clone(),
                Some(props),
            )?);
            self.files.push(path);
        }
        let w = self.current.as_mut().expect("opened above");
        w.write(batch)?;
        // Bound memory: a row group in progress is flushed at 48 MiB.
        if w.in_progress_size() > 48 << 20 {
            w.flush()?;
        }
        if w.bytes_written() as u64 + w.in_progress_size() as u64 >= self.target {
            self.close_file()?;
        }
        Ok(())
    }

    /// Bytes buffered for the row group in progress.
    pub fn buffered(&self) -> usize {
        self.current.as_ref().map_or(0, |w| w.in_progress_size())
    }

    /// Writes out the row group in progress (to bound memory).
    pub fn flush_row_group(&mut self) -> Result<()> {
        if let Some(w) = self.current.as_mut() {
            w.flush()?;
        }
        Ok(())
    }

    pub fn is_open(&self) -> bool {
        self.current.is_some()
    }

    /// Finishes the current file; the next write starts a new one.
    pub fn close_file(&mut self) -> Result<()> {
        if let Some(w) = self.current.take() {
            let meta = w.close()?;
            let _ = meta;
            if let Some(p) = self.files.last() {
                self.bytes += std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            }
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<(Vec<PathBuf>, u64)> {
        self.close_file()?;
        Ok((self.files, self.bytes))
    }
}
