//! Parquet output: one file per resource type (and partition) at a time, shared by the workers.
//!
//! Each worker encodes its own row groups ([`RowGroupEncoder`]: batches in, compressed column
//! chunks out, so the costly part runs on every core); a finished row group is appended to the
//! type's file in [`FileSet`] under a short lock. A type's data thus lands in one file per run
//! (a new one past `--target-file-mb`), whatever the number of threads: a wide FHIR schema costs
//! a footer of a few hundred bytes per column in every file, so fewer files is smaller output.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
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

use crate::schema::node::OVERFLOW_COLUMN;
use crate::store::{MultipartSink, PendingUpload, Remote};

/// Values per column written in one go (see [`WriteOptions::properties`]).
const WRITE_BATCH: usize = 8192;

/// The largest dictionary page of a column chunk before the writer falls back to plain pages.
/// Columns of nearly distinct values get no dictionary at all (see [`tune_columns`]).
const DICTIONARY_PAGE_BYTES: usize = 8 << 20;

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

/// `props` tuned per leaf column from `batch`, the first a worker encodes for a type.
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
    fn leaves<'a>(a: &'a dyn Array, out: &mut Vec<&'a dyn Array>) {
        match a.data_type() {
            DataType::Struct(_) => {
                for c in a.as_struct().columns() {
                    leaves(c.as_ref(), out);
                }
            }
            DataType::List(_) => leaves(a.as_list::<i32>().values().as_ref(), out),
            _ => out.push(a),
        }
    }
    if batch.num_rows() < 100 {
        return props.clone();
    }
    let mut arrays = Vec::new();
    for c in batch.columns() {
        leaves(c.as_ref(), &mut arrays);
    }
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
                std::fs::create_dir_all(&dir)
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

/// The Parquet files a run writes: per folder (a type, or a partition of one), the file being
/// written, shared by every worker.
pub struct FileSet {
    target: Target,
    prefix: String,
    max_bytes: u64,
    files: Mutex<FxHashMap<PathBuf, Arc<Mutex<SharedFile>>>>,
}

/// The files of one folder.
struct SharedFile {
    dir: PathBuf,
    root: TypePtr,
    props: WriterPropertiesPtr,
    seq: usize,
    current: Option<SerializedFileWriter<Sink>>,
    done: Vec<String>,
    bytes: u64,
    pending: Vec<PendingUpload>,
    /// Whether the file being written has a page index, decided by its first row group (see
    /// [`SharedFile::append_row_group`]).
    page_index: Option<bool>,
    /// Rows of workers that wrote no row group here, written as one row group at the end.
    leftover: Option<(RowGroupEncoder, Vec<RecordBatch>)>,
}

impl SharedFile {
    fn append(&mut self, set: &FileSet, chunks: Vec<ArrowColumnChunk>) -> Result<()> {
        let written = self.append_row_group(set, chunks);
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
    fn append_row_group(&mut self, set: &FileSet, mut chunks: Vec<ArrowColumnChunk>) -> Result<()> {
        if self.current.is_none() {
            self.page_index = None;
            let name = format!("part-{}-{:05}.parquet", set.prefix, self.seq);
            self.seq += 1;
            let sink = set.target.create(&self.dir, &name)?;
            self.current = Some(SerializedFileWriter::new(
                sink,
                self.root.clone(),
                self.props.clone(),
            )?);
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
    pub bytes: u64,
    /// Uploads to complete when the run commits (object stores only).
    pub pending: Vec<PendingUpload>,
}

impl FileSet {
    /// Files are named `part-<prefix>-<n>.parquet`, started anew past `max_bytes` bytes.
    pub fn new(target: Target, prefix: String, max_bytes: u64) -> Self {
        FileSet {
            target,
            prefix,
            max_bytes,
            files: Mutex::new(FxHashMap::default()),
        }
    }

    /// The shared file of an encoder's folder, made on first use.
    fn folder(&self, e: &RowGroupEncoder) -> Result<Arc<Mutex<SharedFile>>> {
        let mut files = self.files.lock().expect("no writer panicked");
        if let Some(f) = files.get(&e.dir) {
            return Ok(f.clone());
        }
        let root = ArrowSchemaConverter::new()
            .convert(&e.schema)?
            .root_schema_ptr();
        let f = Arc::new(Mutex::new(SharedFile {
            dir: e.dir.clone(),
            root,
            props: Arc::new(e.props.clone()),
            seq: 0,
            current: None,
            done: Vec::new(),
            bytes: 0,
            pending: Vec::new(),
            page_index: None,
            leftover: None,
        }));
        files.insert(e.dir.clone(), f.clone());
        Ok(f)
    }

    /// Keeps `batch` for the folder's last row group (see [`RowGroupEncoder::finish`]).
    fn set_aside(&self, encoder: RowGroupEncoder, batch: RecordBatch) -> Result<()> {
        let file = self.folder(&encoder)?;
        let mut f = file.lock().expect("no writer panicked");
        match &mut f.leftover {
            Some((_, batches)) => batches.push(batch),
            None => f.leftover = Some((encoder, vec![batch])),
        }
        Ok(())
    }

    /// Finishes every file; per folder (relative to the target), its files and bytes.
    pub fn finish(self) -> Result<FxHashMap<PathBuf, FolderFiles>> {
        let all: Vec<_> = self
            .files
            .lock()
            .expect("no writer panicked")
            .values()
            .cloned()
            .collect();
        let mut failed = None;
        for file in all {
            let leftover = file.lock().expect("no writer panicked").leftover.take();
            if let Some((mut encoder, batches)) = leftover {
                let written = arrow::compute::concat_batches(&encoder.schema, &batches)
                    .map_err(anyhow::Error::from)
                    .and_then(|batch| encoder.write(&self, &batch))
                    .and_then(|()| encoder.flush(&self));
                if let Err(e) = written {
                    failed = Some(e);
                    break;
                }
            }
        }
        let mut out = FxHashMap::default();
        for (dir, f) in self.files.into_inner().expect("no writer panicked") {
            let mut f = Arc::try_unwrap(f)
                .ok()
                .expect("the workers are done")
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
                let mut f = f.into_inner().expect("no writer panicked");
                f.abort();
                pending.append(&mut f.pending);
            }
        }
        abort_all(pending);
    }
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

/// One worker's row group in progress for one folder of the [`FileSet`]: batches are encoded
/// and compressed here, on the worker's thread; the finished row group goes to the shared file.
pub struct RowGroupEncoder {
    dir: PathBuf,
    schema: SchemaRef,
    /// The file's properties; the codecs of this worker's row groups are chosen from its first
    /// batch (see [`tune_columns`]).
    props: WriterProperties,
    factory: Option<ArrowRowGroupWriterFactory>,
    file: Option<Arc<Mutex<SharedFile>>>,
    writers: Vec<ArrowColumnWriter>,
    rows: usize,
    max_rows: usize,
    /// Leaf columns of the schema: a row group in progress costs memory in proportion.
    pub leaves: usize,
    /// When the worker last wrote here, for flushing the least recently used row group.
    pub last_used: u64,
}

impl RowGroupEncoder {
    pub fn new(dir: &Path, schema: SchemaRef, props: WriterProperties, max_rows: usize) -> Self {
        RowGroupEncoder {
            dir: dir.to_path_buf(),
            leaves: crate::schema::node::width_and_depth(&schema).0,
            schema,
            props,
            factory: None,
            file: None,
            writers: Vec::new(),
            rows: 0,
            max_rows: max_rows.max(1),
            last_used: 0,
        }
    }

    /// Encodes `batch`, appending row groups to `files` as they fill.
    pub fn write(&mut self, files: &FileSet, batch: &RecordBatch) -> Result<()> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let n = (batch.num_rows() - offset).min(self.max_rows - self.rows);
            self.encode(files, &batch.slice(offset, n))?;
            offset += n;
            // Bound memory: a row group is also cut at 48 MiB.
            if self.rows >= self.max_rows || self.buffered() > 48 << 20 {
                self.flush(files)?;
            }
        }
        Ok(())
    }

    fn encode(&mut self, files: &FileSet, batch: &RecordBatch) -> Result<()> {
        if self.file.is_none() {
            self.file = Some(files.folder(self)?);
        }
        if self.factory.is_none() {
            let props = tune_columns(&self.props, batch);
            let file = self.file.as_ref().expect("set above");
            let root = file.lock().expect("no writer panicked").root.clone();
            // The factory takes its schema and properties from a file writer; this one is
            // never written to.
            let probe = SerializedFileWriter::new(std::io::sink(), root, Arc::new(props))?;
            self.factory = Some(ArrowRowGroupWriterFactory::new(&probe, self.schema.clone()));
        }
        if self.writers.is_empty() {
            let factory = self.factory.as_ref().expect("made above");
            self.writers = factory.create_column_writers(0)?;
        }
        let mut writers = self.writers.iter_mut();
        for (field, column) in self.schema.fields().iter().zip(batch.columns()) {
            for leaf in compute_leaves(field, column)? {
                writers.next().expect("a writer per leaf").write(&leaf)?;
            }
        }
        self.rows += batch.num_rows();
        Ok(())
    }

    /// Bytes buffered for the row group in progress.
    pub fn buffered(&self) -> usize {
        self.writers
            .iter()
            .map(|w| w.get_estimated_total_bytes())
            .sum()
    }

    pub fn in_progress(&self) -> bool {
        !self.writers.is_empty()
    }

    /// Ends this worker's writing here, with the rows not yet encoded. A worker that has a row
    /// group in progress appends them to it and writes it out; one that has none hands them to
    /// the file set, which writes every such worker's rows as one row group at the end. A type
    /// smaller than a batch per worker thus gets one row group, not one per worker: each row
    /// group costs a few hundred bytes of metadata per column.
    pub fn finish(mut self, files: &FileSet, batch: Option<RecordBatch>) -> Result<()> {
        match batch {
            Some(batch) if !self.in_progress() => files.set_aside(self, batch),
            Some(batch) => {
                self.write(files, &batch)?;
                self.flush(files)
            }
            None => self.flush(files),
        }
    }

    /// Finishes the row group in progress and appends it to the folder's file.
    pub fn flush(&mut self, files: &FileSet) -> Result<()> {
        if self.writers.is_empty() {
            return Ok(());
        }
        let mut chunks = std::mem::take(&mut self.writers)
            .into_iter()
            .map(|w| w.close())
            .collect::<Result<Vec<_>, _>>()?;
        for c in &mut chunks {
            trim_empty(c)?;
        }
        self.rows = 0;
        let file = self.file.as_ref().expect("set with the first batch");
        file.lock()
            .expect("no writer panicked")
            .append(files, chunks)
    }
}
