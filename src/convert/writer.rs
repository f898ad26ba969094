//! Parquet output: one file per resource type (and partition) at a time, shared by the workers.
//!
//! Each type (or partition) has one [`Folder`] in the [`FileSet`]: one file being written and
//! one row group in progress, shared by every worker. A worker hands in a decoded batch and
//! encodes the columns of the fields no other worker is encoding (batches in, compressed column
//! chunks out, so the costly part runs on every core); a full row group is appended to the file.
//! A type's data thus lands in one file per run (a new one past `--target-file-mb`) and one row
//! group per `--row-group-rows`, whatever the number of threads: a wide FHIR schema costs a
//! footer entry of about a hundred bytes per column in every row group, and the levels of its
//! empty columns a page each, so fewer row groups is smaller output.
//!
//! Each row group has a `Shape`: the typed schema's columns it holds. With [`Columns::Present`]
//! (the default) that is the columns that had a value so far, so that empty columns cost
//! neither encoding nor bytes (a batch with a value outside the shape ends the row group and its
//! file, and widens the shape; the run widens the type's earlier files to match at the end,
//! see [`crate::dataset::unify`]); with [`Columns::All`], every column.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, Result};
use arrow::array::{Array, ArrayRef, AsArray, ListArray, RecordBatch, StructArray};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use parquet::arrow::arrow_writer::{
    compute_leaves, ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory,
};
use parquet::arrow::ArrowSchemaConverter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{
    EnabledStatistics, WriterProperties, WriterPropertiesBuilder, WriterPropertiesPtr,
};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::{ColumnPath, TypePtr};
use rustc_hash::FxHashMap;

use crate::schema::node::{prune_schema, OVERFLOW_COLUMN};
use crate::store::{MultipartSink, PendingUpload, Remote};

/// Values per column written in one go (see [`WriteOptions::properties`]).
const WRITE_BATCH: usize = 8192;

/// The largest dictionary page of a column chunk before the writer falls back to plain pages.
/// Columns of nearly distinct values get no dictionary at all (see [`tune_columns`]).
const DICTIONARY_PAGE_BYTES: usize = 8 << 20;

/// Output compression (`--compression`).
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
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
    pub columns: Columns,
}

/// Which of the typed schema's leaf columns a file holds.
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Columns {
    /// Every column of the type's typed schema, in every file.
    All,
    /// The columns that hold a value, and of each top-level element that holds none, its
    /// first column: the file's schema is a part of the typed schema, which stays the table's
    /// (readers fill the rest with NULL). Only those columns are encoded. A batch with a value
    /// in a column the row group in progress leaves out ends that row group and its file; the
    /// next ones hold that column too. When the run ends, the files of a type are made to hold
    /// the same columns ([`crate::dataset::unify`]).
    #[default]
    Present,
}

/// The codec of columns that are nearly always empty: Snappy keeps no state between pages
/// (zstd's writer holds a compressor and a decompressor per column, ~100 KB, set up for every
/// column of every row group) and every Parquet reader has it.
const SPARSE: Compression = Compression::SNAPPY;

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
                // are mostly levels, and a zstd compressor per column costs its memory and set-up
                // time in every row group. They get the cheap codec.
                let rare = parts.iter().any(|p| {
                    p == "extension"
                        || p == "modifierExtension"
                        || (p.starts_with('_') && p != OVERFLOW_COLUMN)
                });
                if rare {
                    builder = sparse(builder, col.path(), compression);
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
            // A dictionary of long values that repeat (a note attached to many documents)
            // outgrows the default 1 MiB and falls back to plain pages of every copy.
            .set_dictionary_page_size_limit(DICTIONARY_PAGE_BYTES)
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

/// A nearly always empty column: the cheap codec (where the file is compressed at all) and no
/// dictionary, whose page and metadata would cost more than the values.
fn sparse(
    builder: WriterPropertiesBuilder,
    col: &ColumnPath,
    codec: Compression,
) -> WriterPropertiesBuilder {
    let builder = builder.set_column_dictionary_enabled(col.clone(), false);
    match codec {
        Compression::UNCOMPRESSED => builder,
        _ => builder.set_column_compression(col.clone(), SPARSE),
    }
}

/// `props` tuned per leaf column from `batch`, the first rows of a type (see [`TUNE_ROWS`]).
///
/// - A column that holds no value gets the cheap codec (where the file is compressed at all).
///   Most of a resource table's thousand columns are empty in most rows, and parquet-rs sets up
///   a codec per column per row group: zstd's costs ~100 KB and its time, Snappy's nothing. A
///   column still empty after a first batch of 100 rows or more is rare, and its pages are
///   mostly levels, which Snappy compresses well enough.
/// - A column whose values are nearly all distinct (identifiers, references to one-off
///   resources, instants) gets no dictionary: one would hold every value once more and add an
///   index per value, and the writer would hash every value before giving up on it.
fn tune_columns(props: &WriterProperties, batch: &RecordBatch) -> WriterProperties {
    if batch.num_rows() < 100 {
        return props.clone();
    }
    let arrays = leaf_arrays(batch);
    let Ok(descr) = ArrowSchemaConverter::new().convert(batch.schema_ref()) else {
        return props.clone();
    };
    if descr.num_columns() != arrays.len() {
        return props.clone();
    }
    let mut builder = props.clone().into_builder();
    for (col, a) in descr.columns().iter().zip(arrays) {
        if a.len() == a.null_count() {
            builder = sparse(builder, col.path(), props.compression(col.path()));
        } else if props.dictionary_enabled(col.path()) && mostly_distinct(a) {
            builder = builder.set_column_dictionary_enabled(col.path().clone(), false);
        }
    }
    builder.build()
}

/// Whether at least half of the (at least 64) values of `a` are distinct: the point below which
/// a dictionary pays.
fn mostly_distinct(a: &dyn Array) -> bool {
    let values = a.len() - a.null_count();
    if values < 64 {
        return false;
    }
    fn distinct<'a>(values: impl Iterator<Item = &'a [u8]>) -> usize {
        values.collect::<rustc_hash::FxHashSet<_>>().len()
    }
    let valid = (0..a.len()).filter(|&i| a.is_valid(i));
    let distinct = match a.data_type() {
        DataType::Utf8 => {
            let s = a.as_string::<i32>();
            distinct(valid.map(|i| s.value(i).as_bytes()))
        }
        DataType::Binary => {
            let b = a.as_binary::<i32>();
            distinct(valid.map(|i| b.value(i)))
        }
        t => {
            let Some(width) = t.primitive_width() else {
                return false;
            };
            let data = a.to_data();
            let buf = &data.buffers()[0].as_slice()[data.offset() * width..];
            distinct(valid.map(|i| &buf[i * width..(i + 1) * width]))
        }
    };
    distinct * 2 >= values
}

/// Drops the statistics of a column chunk that holds no value: the null count, level histograms
/// and page index of a column that is all null cost ~40 bytes per column per row group, and a
/// wide schema has thousands of such columns. A reader without statistics reads the chunk,
/// which is a few bytes.
fn trim_empty(chunk: &mut ArrowColumnChunk) -> Result<()> {
    let close = chunk.close_mut();
    let meta = &close.metadata;
    let empty = meta
        .statistics()
        .is_some_and(|s| s.min_bytes_opt().is_none() && s.max_bytes_opt().is_none());
    if !empty {
        return Ok(());
    }
    close.metadata = meta
        .clone()
        .into_builder()
        .clear_statistics()
        .set_repetition_level_histogram(None)
        .set_definition_level_histogram(None)
        .set_unencoded_byte_array_data_bytes(None)
        .clear_page_encoding_stats()
        .build()?;
    close.column_index = None;
    Ok(())
}

/// The leaf arrays of `batch`, in the order of its schema's leaf columns (a list's items, a
/// struct's fields).
fn leaf_arrays(batch: &RecordBatch) -> Vec<&dyn Array> {
    fn walk<'a>(a: &'a dyn Array, out: &mut Vec<&'a dyn Array>) {
        match a.data_type() {
            DataType::Struct(_) => {
                for c in a.as_struct().columns() {
                    walk(c.as_ref(), out);
                }
            }
            DataType::List(_) => walk(a.as_list::<i32>().values().as_ref(), out),
            _ => out.push(a),
        }
    }
    let mut out = Vec::new();
    for c in batch.columns() {
        walk(c.as_ref(), &mut out);
    }
    out
}

/// Which leaves of `batch` (in the order of its schema's leaf columns) hold a value: a leaf
/// array with fewer nulls than items. (A value under a NULL parent counts too: the column is
/// then kept without need, never left out with a value.)
fn leaves_with_values(batch: &RecordBatch) -> Vec<bool> {
    leaf_arrays(batch)
        .iter()
        .map(|a| a.null_count() < a.len())
        .collect()
}

/// Leaf columns per top-level field of `schema`.
fn field_leaves(schema: &Schema) -> Vec<usize> {
    schema
        .fields()
        .iter()
        .map(|f| crate::schema::node::leaf_count(f.data_type()))
        .collect()
}

/// `a` as an array of `dt`, a pruned form of its type ([`prune_schema`]): struct fields left out
/// are dropped; the data is shared.
fn project(a: &ArrayRef, dt: &DataType) -> ArrayRef {
    match dt {
        DataType::Struct(fields) => {
            let s = a.as_struct();
            let mut source = s.fields().iter().zip(s.columns());
            let columns = fields
                .iter()
                .map(|f| {
                    let (_, c) = source
                        .find(|(g, _)| g.name() == f.name())
                        .expect("a pruned struct keeps its fields in order");
                    project(c, f.data_type())
                })
                .collect();
            Arc::new(StructArray::new(
                fields.clone(),
                columns,
                s.nulls().cloned(),
            ))
        }
        DataType::List(item) => {
            let l = a.as_list::<i32>();
            Arc::new(ListArray::new(
                item.clone(),
                l.offsets().clone(),
                project(l.values(), item.data_type()),
                l.nulls().cloned(),
            ))
        }
        _ => a.clone(),
    }
}

/// The part of a type's typed schema a row group and its file hold: all of it, or with
/// [`Columns::Present`] the columns that had a value so far (and the first of each top-level
/// element that had none, so that every top-level column is in every file).
struct Shape {
    /// Over the typed schema's leaf columns.
    kept: Vec<bool>,
    /// The Arrow schema of the kept columns: the typed schema where all are kept.
    schema: SchemaRef,
    /// Leaf columns per top-level field of `schema`.
    field_leaves: Vec<usize>,
    leaves: usize,
    /// Column writers of `schema`, with the folder's codecs.
    factory: ArrowRowGroupWriterFactory,
    /// The Parquet schema of the files of this shape.
    root: TypePtr,
    /// Whether `schema` is the typed schema (batches need no projection).
    whole: bool,
}

/// Where a run's files go: a local (temporary) folder, or a prefix of an object store, where
/// each file is a multipart upload that the run completes only when it commits.
pub enum Target {
    Dir(PathBuf),
    Store(Remote),
}

/// A file being written.
enum Sink {
    File(BufWriter<File>),
    Store(MultipartSink),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::File(f) => f.write(buf),
            Sink::Store(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::File(f) => f.flush(),
            Sink::Store(s) => s.flush(),
        }
    }
}

impl Target {
    /// A path relative to the target, as the user knows it.
    fn display(&self, rel: &Path) -> String {
        match self {
            Target::Dir(root) => root.join(rel).display().to_string(),
            Target::Store(remote) => remote.url(&rel.to_string_lossy().replace('\\', "/")),
        }
    }

    /// Opens `dir/name` (`dir` relative to the target).
    fn create(&self, dir: &Path, name: &str) -> Result<Sink> {
        match self {
            Target::Dir(root) => {
                let dir = root.join(dir);
                fs_err::create_dir_all(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                let path = dir.join(name);
                let file = File::create(&path)
                    .with_context(|| format!("cannot create {}", path.display()))?;
                Ok(Sink::File(BufWriter::with_capacity(1 << 20, file)))
            }
            Target::Store(remote) => {
                let rel = format!("{}/{name}", dir.to_string_lossy());
                Ok(Sink::Store(MultipartSink::create(
                    remote,
                    remote.path(&rel),
                )?))
            }
        }
    }
}

/// The resource type of a run's folder (`Observation`, `Observation/effective_year=2019`), relative
/// to the target.
pub fn folder_type(dir: &Path) -> String {
    dir.iter()
        .next()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// The Parquet files a run writes: per folder (a type, or a partition of one), the file being
/// written, shared by every worker.
pub struct FileSet {
    target: Target,
    prefix: String,
    max_bytes: u64,
    columns: Columns,
    files: Mutex<FxHashMap<PathBuf, Arc<Folder>>>,
    /// Per resource type, the leaf columns its folders' shapes hold together (see
    /// [`Folder::type_kept`]).
    kept: Mutex<FxHashMap<String, Arc<Mutex<Vec<bool>>>>>,
    /// Counts batches handed in, to find the least recently used row group.
    tick: AtomicU64,
}

/// The files of one folder.
struct SharedFile {
    dir: PathBuf,
    root: TypePtr,
    props: WriterPropertiesPtr,
    seq: usize,
    current: Option<SerializedFileWriter<Sink>>,
    done: Vec<String>,
    /// Rows of each closed file of `done`.
    rows: Vec<u64>,
    bytes: u64,
    pending: Vec<PendingUpload>,
    /// Whether the file being written has a page index, decided by its first row group (see
    /// [`SharedFile::append_row_group`]).
    page_index: Option<bool>,
    /// The Parquet schema of the file being written.
    schema: Option<TypePtr>,
}

impl SharedFile {
    fn append(
        &mut self,
        set: &FileSet,
        chunks: Vec<ArrowColumnChunk>,
        root: &TypePtr,
    ) -> Result<()> {
        let written = self.append_row_group(set, chunks, root);
        written.with_context(|| {
            let name = self.done.last().cloned().unwrap_or_default();
            format!(
                "cannot write {}: the run stops and the dataset is left as it was",
                set.target.display(&self.dir.join(name))
            )
        })
    }

    /// Appends a row group, opening a file first if none is open.
    ///
    /// A file whose first row group has one page per column gets no page index: each column's
    /// one page is already described by its chunk's metadata and statistics, and the index would
    /// add ~25 bytes per column (a wide table's thousands of columns). Later row groups of the
    /// file follow the first, as readers use a file's page index only when every chunk has one.
    ///
    /// A row group of another [`Shape`] (`root`, its Parquet schema) than the file's closes
    /// the file and starts the next.
    fn append_row_group(
        &mut self,
        set: &FileSet,
        mut chunks: Vec<ArrowColumnChunk>,
        root: &TypePtr,
    ) -> Result<()> {
        if self.current.is_some() && !self.schema.as_ref().is_some_and(|s| Arc::ptr_eq(s, root)) {
            self.close(&set.target)?;
        }
        if self.current.is_none() {
            self.page_index = None;
            let name = crate::dataset::layout::part_file(&set.prefix, self.seq);
            self.seq += 1;
            let sink = set.target.create(&self.dir, &name)?;
            self.current = Some(SerializedFileWriter::new(
                sink,
                root.clone(),
                self.props.clone(),
            )?);
            self.schema = Some(root.clone());
            self.done.push(name);
        }
        let one_page = |c: &ArrowColumnChunk| {
            c.close()
                .offset_index
                .as_ref()
                .is_none_or(|o| o.page_locations().len() <= 1)
        };
        let page_index = *self
            .page_index
            .get_or_insert_with(|| !chunks.iter().all(one_page));
        if !page_index {
            for c in &mut chunks {
                let close = c.close_mut();
                close.column_index = None;
                close.offset_index = None;
            }
        }
        let w = self.current.as_mut().expect("opened above");
        let mut rg = w.next_row_group()?;
        for chunk in chunks {
            chunk.append_to_row_group(&mut rg)?;
        }
        rg.close()?;
        if w.bytes_written() as u64 >= set.max_bytes {
            self.close(&set.target)?;
        }
        Ok(())
    }

    fn close(&mut self, target: &Target) -> Result<()> {
        if let Some(w) = self.current.take() {
            let name = self.done.last().expect("a file is open");
            let what = || {
                format!(
                    "cannot write {}: the run stops and the dataset is left as it was",
                    target.display(&self.dir.join(name))
                )
            };
            let written = w.bytes_written() as u64;
            let rows = w.flushed_row_groups().iter().map(|g| g.num_rows() as u64);
            self.rows.push(rows.sum());
            match w.into_inner().with_context(what)? {
                Sink::File(mut f) => {
                    f.flush().with_context(what)?;
                    self.bytes += f.get_ref().metadata().map(|m| m.len()).unwrap_or(written);
                }
                Sink::Store(s) => {
                    let p = s.finish()?;
                    self.bytes += p.bytes;
                    self.pending.push(p);
                }
            }
        }
        Ok(())
    }

    /// Gives up the file in progress (a failed run).
    fn abort(&mut self) {
        if let Some(w) = self.current.take() {
            if let Ok(Sink::Store(s)) = w.into_inner() {
                s.abort();
            }
        }
    }
}

/// What one folder's files came to.
#[derive(Debug, Default)]
pub struct FolderFiles {
    /// File names, in the folder.
    pub names: Vec<String>,
    /// Rows of each file of `names`.
    pub rows: Vec<u64>,
    pub bytes: u64,
    /// Uploads to complete when the run commits (object stores only).
    pub pending: Vec<PendingUpload>,
}

impl FileSet {
    /// Files are named `part-<prefix>-<n>.parquet`, started anew past `max_bytes` bytes.
    pub fn new(target: Target, prefix: String, max_bytes: u64, columns: Columns) -> Self {
        FileSet {
            target,
            prefix,
            max_bytes,
            columns,
            files: Mutex::new(FxHashMap::default()),
            kept: Mutex::new(FxHashMap::default()),
            tick: AtomicU64::new(0),
        }
    }

    /// The folder `dir` (relative to the target) of resources of `schema`, made on first use.
    pub fn folder(
        &self,
        dir: &Path,
        schema: SchemaRef,
        props: WriterProperties,
        max_rows: usize,
    ) -> Result<Arc<Folder>> {
        let mut files = self.files.lock().expect("no writer panicked");
        if let Some(f) = files.get(dir) {
            return Ok(f.clone());
        }
        let root = ArrowSchemaConverter::new()
            .convert(&schema)?
            .root_schema_ptr();
        let field_leaves = field_leaves(&schema);
        let type_kept = self
            .kept
            .lock()
            .expect("no writer panicked")
            .entry(folder_type(dir))
            .or_insert_with(|| Arc::new(Mutex::new(vec![false; field_leaves.iter().sum()])))
            .clone();
        let f = Arc::new(Folder {
            type_kept,
            field_leaves,
            schema,
            max_rows: max_rows.max(1),
            file: Mutex::new(SharedFile {
                dir: dir.to_path_buf(),
                root,
                props: Arc::new(props),
                seq: 0,
                current: None,
                done: Vec::new(),
                rows: Vec::new(),
                bytes: 0,
                pending: Vec::new(),
                page_index: None,
                schema: None,
            }),
            columns: self.columns,
            tuned: OnceLock::new(),
            current: Mutex::new(Slot::default()),
            last_used: AtomicU64::new(0),
        });
        files.insert(dir.to_path_buf(), f.clone());
        Ok(f)
    }

    fn all(&self) -> Vec<Arc<Folder>> {
        let files = self.files.lock().expect("no writer panicked");
        files.values().cloned().collect()
    }

    /// Keeps the row groups in progress within `open_columns` leaf columns and `bytes`:
    /// past either, the least recently used (columns) or the largest (bytes) is finished.
    /// Each column writer holds a codec, about 100 KB with zstd.
    pub fn bound(&self, open_columns: usize, bytes: usize) -> Result<()> {
        loop {
            let all = self.all();
            let open: Vec<_> = all
                .iter()
                .filter_map(|f| f.open().map(|(leaves, b)| (f, leaves, b)))
                .collect();
            let columns: usize = open.iter().map(|o| o.1).sum();
            let held: usize = open.iter().map(|o| o.2).sum();
            let victim = if open.len() > 1 && columns > open_columns {
                open.iter()
                    .min_by_key(|o| o.0.last_used.load(Ordering::Relaxed))
            } else if held > bytes {
                open.iter().max_by_key(|o| o.2)
            } else {
                None
            };
            match victim {
                Some((f, _, _)) => f.flush(self)?,
                None => return Ok(()),
            }
        }
    }

    /// Finishes every row group in progress (on `threads` threads) and every file; per
    /// folder (relative to the target), its files and bytes.
    pub fn finish(self, threads: usize) -> Result<FxHashMap<PathBuf, FolderFiles>> {
        let all = self.all();
        let next = AtomicUsize::new(0);
        let failed: Mutex<Option<anyhow::Error>> = Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..threads.clamp(1, all.len().max(1)) {
                scope.spawn(|| {
                    while let Some(f) = all.get(next.fetch_add(1, Ordering::Relaxed)) {
                        if let Err(e) = f.flush(&self) {
                            failed.lock().expect("no writer panicked").get_or_insert(e);
                            return;
                        }
                    }
                });
            }
        });
        let mut failed = failed.into_inner().expect("no writer panicked");
        drop(all);
        let mut out = FxHashMap::default();
        for (dir, f) in self.files.into_inner().expect("no writer panicked") {
            let mut f = Arc::try_unwrap(f)
                .ok()
                .expect("the workers are done")
                .file
                .into_inner()
                .expect("no writer panicked");
            if failed.is_none() {
                if let Err(e) = f.close(&self.target) {
                    failed = Some(e);
                }
            }
            f.abort();
            out.insert(
                dir,
                FolderFiles {
                    names: f.done,
                    rows: f.rows,
                    bytes: f.bytes,
                    pending: f.pending,
                },
            );
        }
        match failed {
            None => Ok(out),
            Some(e) => {
                abort_all(out.into_values().flat_map(|f| f.pending));
                Err(e)
            }
        }
    }

    /// Gives up every file (a failed run): nothing of it becomes visible.
    pub fn abort(self) {
        let mut pending = Vec::new();
        for (_, f) in self.files.into_inner().expect("no writer panicked") {
            if let Ok(f) = Arc::try_unwrap(f) {
                let mut f = f.file.into_inner().expect("no writer panicked");
                f.abort();
                pending.append(&mut f.pending);
            }
        }
        abort_all(pending);
    }
}

/// Completes uploads, sixteen at a time (each file appears whole); the first that failed, with
/// its object, where one did.
pub fn complete_all(
    pending: impl IntoIterator<Item = PendingUpload>,
) -> Option<(object_store::path::Path, object_store::Error)> {
    use futures::StreamExt;
    let pending: Vec<PendingUpload> = pending.into_iter().collect();
    let results: Vec<_> = crate::store::block_on(
        futures::stream::iter(pending.into_iter().map(|u| {
            let path = u.path.clone();
            async move { (path, u.complete().await) }
        }))
        .buffer_unordered(16)
        .collect(),
    );
    results
        .into_iter()
        .find_map(|(p, r)| r.err().map(|e| (p, e)))
}

/// Aborts uploads (best effort: what fails here the store's lifecycle rules drop).
pub fn abort_all(pending: impl IntoIterator<Item = PendingUpload>) {
    let all: Vec<_> = pending.into_iter().collect();
    if all.is_empty() {
        return;
    }
    crate::store::block_on(futures::future::join_all(
        all.into_iter().map(|p| p.abort()),
    ));
}

/// A folder's row group in progress, shared by every worker.
///
/// A worker hands a decoded batch to the row group ([`Folder::write`]) and then encodes
/// whatever columns no other worker is encoding: each top-level field has its own column
/// writers behind its own lock, and takes the batches in the order they came. A type's rows
/// thus go to one row group at a time however many workers decode them, and encoding a wide
/// table spreads over every core.
struct RowGroup {
    /// The columns it holds; its batches are of `shape.schema`.
    shape: Arc<Shape>,
    queue: Mutex<Queue>,
    fields: Vec<Mutex<FieldWriters>>,
    /// What the column writers hold, as last measured by each field.
    bytes: AtomicUsize,
}

/// Batches of a row group not yet taken by every field.
struct Queue {
    /// Each batch with the number of fields yet to write it.
    batches: VecDeque<(RecordBatch, usize)>,
    /// The sequence number of `batches[0]`.
    first: u64,
    rows: usize,
}

/// The column writers of one top-level field.
struct FieldWriters {
    writers: Vec<ArrowColumnWriter>,
    /// The sequence number of the next batch to write.
    next: u64,
    bytes: usize,
}

/// Batches a row group may hold not yet encoded before the worker handing in one more waits
/// for every field to take them (bounds memory when one field is slow).
const MAX_QUEUED: usize = 4;

/// A row group is also cut at this many bytes held by its column writers.
const ROW_GROUP_BYTES: usize = 48 << 20;

impl RowGroup {
    fn new(shape: Arc<Shape>) -> Result<Self> {
        let mut all = shape.factory.create_column_writers(0)?.into_iter();
        let fields = shape
            .field_leaves
            .iter()
            .map(|&n| {
                Mutex::new(FieldWriters {
                    writers: all.by_ref().take(n).collect(),
                    next: 0,
                    bytes: 0,
                })
            })
            .collect();
        Ok(RowGroup {
            shape,
            queue: Mutex::new(Queue {
                batches: VecDeque::new(),
                first: 0,
                rows: 0,
            }),
            fields,
            bytes: AtomicUsize::new(0),
        })
    }

    /// Writes to field `i` the batches it has not taken yet.
    fn drain(&self, i: usize, fw: &mut FieldWriters) -> Result<()> {
        let field = &self.shape.schema.fields()[i];
        loop {
            let todo: Vec<RecordBatch> = {
                let q = self.queue.lock().expect("no writer panicked");
                let from = (fw.next - q.first) as usize;
                q.batches
                    .iter()
                    .skip(from)
                    .map(|(b, _)| b.clone())
                    .collect()
            };
            if todo.is_empty() {
                return Ok(());
            }
            for batch in &todo {
                let mut writers = fw.writers.iter_mut();
                for leaf in compute_leaves(field, batch.column(i))? {
                    writers.next().expect("a writer per leaf").write(&leaf)?;
                }
            }
            let bytes = fw
                .writers
                .iter()
                .map(|w| w.get_estimated_total_bytes())
                .sum();
            if bytes >= fw.bytes {
                self.bytes.fetch_add(bytes - fw.bytes, Ordering::Relaxed);
            } else {
                self.bytes.fetch_sub(fw.bytes - bytes, Ordering::Relaxed);
            }
            fw.bytes = bytes;
            let mut q = self.queue.lock().expect("no writer panicked");
            let from = (fw.next - q.first) as usize;
            for (_, left) in q.batches.range_mut(from..from + todo.len()) {
                *left -= 1;
            }
            fw.next += todo.len() as u64;
            while q.batches.front().is_some_and(|(_, left)| *left == 0) {
                q.batches.pop_front();
                q.first += 1;
            }
        }
    }

    /// Encodes what it can of the waiting batches: every field no other worker holds, from
    /// `start` on (workers start at different fields). With `wait`, every field, waiting for
    /// the workers that hold one.
    fn help(&self, start: usize, wait: bool) -> Result<()> {
        let n = self.fields.len();
        for k in 0..n {
            let i = (start + k) % n;
            let mut fw = match self.fields[i].try_lock() {
                Ok(fw) => fw,
                Err(std::sync::TryLockError::WouldBlock) if wait => {
                    self.fields[i].lock().expect("no writer panicked")
                }
                Err(std::sync::TryLockError::WouldBlock) => continue,
                Err(std::sync::TryLockError::Poisoned(_)) => panic!("a writer panicked"),
            };
            self.drain(i, &mut fw)?;
        }
        Ok(())
    }

    fn queued(&self) -> usize {
        self.queue.lock().expect("no writer panicked").batches.len()
    }

    fn rows(&self) -> usize {
        self.queue.lock().expect("no writer panicked").rows
    }

    /// Encodes every waiting batch and closes the column writers: the row group's chunks, in
    /// the order of the shape's leaves.
    fn close(&self) -> Result<Vec<ArrowColumnChunk>> {
        let mut chunks = Vec::new();
        for (i, f) in self.fields.iter().enumerate() {
            let mut fw = f.lock().expect("no writer panicked");
            self.drain(i, &mut fw)?;
            for w in std::mem::take(&mut fw.writers) {
                let mut chunk = w.close()?;
                trim_empty(&mut chunk)?;
                chunks.push(chunk);
            }
        }
        Ok(chunks)
    }
}

/// One folder of the [`FileSet`] (a type, or a partition of one): its file and its row group
/// in progress.
pub struct Folder {
    /// The type's typed schema.
    schema: SchemaRef,
    /// The leaf columns the shapes of every folder of the type (its partitions) hold together:
    /// a new shape takes them all, so that a partition's files hold the columns other
    /// partitions found before it, and fewer files need widening when the run ends.
    type_kept: Arc<Mutex<Vec<bool>>>,
    /// Leaf columns per top-level field of `schema`.
    field_leaves: Vec<usize>,
    max_rows: usize,
    columns: Columns,
    /// The files' properties with codecs chosen from the folder's first rows (see
    /// [`tune_columns`]).
    tuned: OnceLock<WriterPropertiesPtr>,
    current: Mutex<Slot>,
    file: Mutex<SharedFile>,
    /// When a batch last came, for finishing the least recently used row group.
    last_used: AtomicU64,
}

/// A folder's row group in progress and its shape, and the rows it gathers before its first
/// one.
#[derive(Default)]
struct Slot {
    rg: Option<Arc<RowGroup>>,
    shape: Option<Arc<Shape>>,
    /// The folder's first rows, until there are [`TUNE_ROWS`] to choose codecs from.
    first: Vec<RecordBatch>,
    first_rows: usize,
}

/// Rows a folder gathers before the codecs and dictionaries of its columns are chosen from
/// them (see [`tune_columns`]): all of a type smaller than this (or than a row group).
const TUNE_ROWS: usize = 8192;

impl Folder {
    /// Hands `batch` to the folder's row group in progress, encodes what this worker can of it
    /// (workers pass different `start`s), and finishes the row group when it is full.
    pub fn write(&self, files: &FileSet, batch: &RecordBatch, start: usize) -> Result<()> {
        self.last_used.store(
            files.tick.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        if self.tuned.get().is_none() {
            let mut slot = self.current.lock().expect("no writer panicked");
            if self.tuned.get().is_none() {
                slot.first.push(batch.clone());
                slot.first_rows += batch.num_rows();
                if slot.first_rows < TUNE_ROWS.min(self.max_rows) {
                    return Ok(());
                }
                let first = self.tune(&mut slot)?;
                drop(slot);
                return self.push(files, &first, start);
            }
        }
        self.push(files, batch, start)
    }

    /// The folder's first rows as one batch, its codecs chosen from them.
    fn tune(&self, slot: &mut Slot) -> Result<RecordBatch> {
        let first = arrow::compute::concat_batches(&self.schema, &std::mem::take(&mut slot.first))?;
        slot.first_rows = 0;
        let props = tune_columns(&self.file.lock().expect("no writer panicked").props, &first);
        self.tuned.get_or_init(|| Arc::new(props));
        Ok(first)
    }

    /// The shape of the leaf columns `kept` (over the typed schema's), with the first of each
    /// top-level field that has none kept too.
    fn shape(&self, mut kept: Vec<bool>) -> Result<Shape> {
        let mut start = 0;
        for &n in &self.field_leaves {
            if n > 0 && !kept[start..start + n].contains(&true) {
                kept[start] = true;
            }
            start += n;
        }
        let whole = !kept.contains(&false);
        let (schema, root) = if whole {
            let root = self.file.lock().expect("no writer panicked").root.clone();
            (self.schema.clone(), root)
        } else {
            let schema = prune_schema(&self.schema, &kept);
            let root = ArrowSchemaConverter::new()
                .convert(&schema)?
                .root_schema_ptr();
            (schema, root)
        };
        let field_leaves = field_leaves(&schema);
        // The factory takes its schema and properties from a file writer; this one is never
        // written to.
        let props = self.tuned.get().expect("made from the first rows").clone();
        let probe = SerializedFileWriter::new(std::io::sink(), root.clone(), props)?;
        Ok(Shape {
            kept,
            leaves: field_leaves.iter().sum(),
            field_leaves,
            factory: ArrowRowGroupWriterFactory::new(&probe, schema.clone()),
            schema,
            root,
            whole,
        })
    }

    fn push(&self, files: &FileSet, batch: &RecordBatch, start: usize) -> Result<()> {
        // The leaves with values: with `--columns present`, a shape must hold them.
        let values = match self.columns {
            Columns::All => None,
            Columns::Present => Some(leaves_with_values(batch)),
        };
        let mut offset = 0;
        while offset < batch.num_rows() {
            let (rg, full, ended) = {
                let mut slot = self.current.lock().expect("no writer panicked");
                let mut ended = None;
                let fits = |s: &Shape| {
                    values
                        .as_ref()
                        .is_none_or(|v| v.iter().zip(&s.kept).all(|(v, k)| !v || *k))
                };
                let shape = match &slot.shape {
                    Some(s) if fits(s) => s.clone(),
                    old => {
                        // A value in a column the row group in progress leaves out: it ends
                        // here (its file too), and the next holds that column as well.
                        let kept = match (old, &values) {
                            (_, None) => vec![true; self.field_leaves.iter().sum()],
                            (None, Some(v)) => v.clone(),
                            (Some(s), Some(v)) => {
                                s.kept.iter().zip(v).map(|(k, v)| *k || *v).collect()
                            }
                        };
                        // With the columns of the type's other folders (the first of each
                        // top-level element without values included), which this one would
                        // otherwise be widened to when the run ends.
                        let s = {
                            let mut all = self.type_kept.lock().expect("no writer panicked");
                            let kept = all.iter().zip(&kept).map(|(a, k)| *a || *k).collect();
                            let s = Arc::new(self.shape(kept)?);
                            all.clone_from(&s.kept);
                            s
                        };
                        ended = slot.rg.take();
                        slot.shape = Some(s.clone());
                        s
                    }
                };
                let rg = match &slot.rg {
                    Some(rg) => rg.clone(),
                    None => {
                        let rg = Arc::new(RowGroup::new(shape.clone())?);
                        slot.rg = Some(rg.clone());
                        rg
                    }
                };
                let mut q = rg.queue.lock().expect("no writer panicked");
                let n = (batch.num_rows() - offset).min(self.max_rows - q.rows);
                let part = batch.slice(offset, n);
                let part = match shape.whole {
                    true => part,
                    false => {
                        let columns = shape
                            .schema
                            .fields()
                            .iter()
                            .map(|f| {
                                let c = part.column_by_name(f.name()).expect("a typed column");
                                project(c, f.data_type())
                            })
                            .collect();
                        RecordBatch::try_new(shape.schema.clone(), columns)?
                    }
                };
                q.batches.push_back((part, shape.field_leaves.len()));
                q.rows += n;
                offset += n;
                let full =
                    q.rows >= self.max_rows || rg.bytes.load(Ordering::Relaxed) > ROW_GROUP_BYTES;
                drop(q);
                if full {
                    slot.rg = None;
                }
                (rg, full, ended)
            };
            if let Some(ended) = ended {
                if ended.rows() > 0 {
                    self.finish_row_group(files, &ended)?;
                }
            }
            if full {
                self.finish_row_group(files, &rg)?;
            } else {
                rg.help(start, false)?;
                if rg.queued() > MAX_QUEUED {
                    rg.help(start, true)?;
                }
            }
        }
        Ok(())
    }

    fn finish_row_group(&self, files: &FileSet, rg: &RowGroup) -> Result<()> {
        let chunks = rg.close()?;
        self.file
            .lock()
            .expect("no writer panicked")
            .append(files, chunks, &rg.shape.root)
    }

    /// Finishes the row group in progress, if any, or writes the rows still gathered for
    /// choosing codecs (a type smaller than [`TUNE_ROWS`]) as one: a folder has its row group
    /// in progress or those rows, never both (the first row group starts from them).
    fn flush(&self, files: &FileSet) -> Result<()> {
        let first = {
            let mut slot = self.current.lock().expect("no writer panicked");
            match slot.first.is_empty() {
                true => None,
                false => Some(self.tune(&mut slot)?),
            }
        };
        if let Some(first) = first {
            self.push(files, &first, 0)?;
        }
        let rg = self.current.lock().expect("no writer panicked").rg.take();
        match rg {
            Some(rg) => self.finish_row_group(files, &rg),
            None => Ok(()),
        }
    }

    /// The leaf columns and bytes of the row group in progress, if any.
    fn open(&self) -> Option<(usize, usize)> {
        let slot = self.current.lock().expect("no writer panicked");
        slot.rg
            .as_ref()
            .map(|rg| (rg.shape.leaves, rg.bytes.load(Ordering::Relaxed)))
    }
}
