//! The run's files: one file in progress per type (or partition) in a `Folder`, with its shape
//! and its row group in progress; the files each folder got; the uploads completed or aborted
//! together.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_writer::{ArrowColumnChunk, ArrowRowGroupWriterFactory};
use parquet::arrow::ArrowSchemaConverter;

use parquet::file::properties::{WriterProperties, WriterPropertiesPtr};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::TypePtr;
use rustc_hash::FxHashMap;

use super::columns::{field_leaves, leaves_with_values, project, tune_columns, Shape};
use super::options::Columns;
use super::row_group::{RowGroup, MAX_QUEUED, ROW_GROUP_BYTES};
use super::target::{folder_type, Sink, Target};
use crate::schema::node::prune_schema;
use crate::store::PendingUpload;

/// The Parquet files a run writes: per folder (a type, or a partition of one), the file being
/// written, shared by every worker.
pub struct FileSet {
    pub(super) target: Target,
    pub(super) prefix: String,
    pub(super) max_bytes: u64,
    pub(super) columns: Columns,
    pub(super) files: Mutex<FxHashMap<PathBuf, Arc<Folder>>>,
    /// Per resource type, the leaf columns its folders' shapes hold together (see
    /// [`Folder::type_kept`]).
    pub(super) kept: Mutex<FxHashMap<String, Arc<Mutex<Vec<bool>>>>>,
    /// Counts batches handed in, to find the least recently used row group.
    pub(super) tick: AtomicU64,
}

/// The files of one folder.
pub(super) struct SharedFile {
    pub(super) dir: PathBuf,
    pub(super) root: TypePtr,
    pub(super) props: WriterPropertiesPtr,
    pub(super) seq: usize,
    pub(super) current: Option<SerializedFileWriter<Sink>>,
    pub(super) done: Vec<String>,
    /// Rows of each closed file of `done`.
    pub(super) rows: Vec<u64>,
    pub(super) bytes: u64,
    pub(super) pending: Vec<PendingUpload>,
    /// Whether the file being written has a page index, decided by its first row group (see
    /// [`SharedFile::append_row_group`]).
    pub(super) page_index: Option<bool>,
    /// The Parquet schema of the file being written.
    pub(super) schema: Option<TypePtr>,
}

impl SharedFile {
    pub(super) fn append(
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
    pub(super) fn append_row_group(
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

    pub(super) fn close(&mut self, target: &Target) -> Result<()> {
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
    pub(super) fn abort(&mut self) {
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

    pub(super) fn all(&self) -> Vec<Arc<Folder>> {
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
        let mut folders = Vec::new();
        for (dir, f) in self.files.into_inner().expect("no writer panicked") {
            let mut folder = Arc::try_unwrap(f).ok().expect("the workers are done");
            let f = folder.file.get_mut().expect("no writer panicked");
            if failed.is_none() {
                if let Err(e) = f.close(&self.target) {
                    failed = Some(e);
                }
            }
            f.abort();
            out.insert(
                dir,
                FolderFiles {
                    names: std::mem::take(&mut f.done),
                    rows: std::mem::take(&mut f.rows),
                    bytes: f.bytes,
                    pending: std::mem::take(&mut f.pending),
                },
            );
            folders.push(folder);
        }
        // The folders' writer properties and shapes: a map entry per column of a wide type.
        crate::background::drop(folders);
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

/// One folder of the [`FileSet`] (a type, or a partition of one): its file and its row group
/// in progress.
pub struct Folder {
    /// The type's typed schema.
    pub(super) schema: SchemaRef,
    /// The leaf columns the shapes of every folder of the type (its partitions) hold together:
    /// a new shape takes them all, so that a partition's files hold the columns other
    /// partitions found before it, and fewer files need widening when the run ends.
    pub(super) type_kept: Arc<Mutex<Vec<bool>>>,
    /// Leaf columns per top-level field of `schema`.
    pub(super) field_leaves: Vec<usize>,
    pub(super) max_rows: usize,
    pub(super) columns: Columns,
    /// The files' properties with codecs chosen from the folder's first rows (see
    /// [`tune_columns`]).
    pub(super) tuned: OnceLock<WriterPropertiesPtr>,
    pub(super) current: Mutex<Slot>,
    pub(super) file: Mutex<SharedFile>,
    /// When a batch last came, for finishing the least recently used row group.
    pub(super) last_used: AtomicU64,
}

/// A folder's row group in progress and its shape, and the rows it gathers before its first
/// one.
#[derive(Default)]
pub(super) struct Slot {
    pub(super) rg: Option<Arc<RowGroup>>,
    pub(super) shape: Option<Arc<Shape>>,
    /// The folder's first rows, until there are [`TUNE_ROWS`] to choose codecs from.
    pub(super) first: Vec<RecordBatch>,
    pub(super) first_rows: usize,
}

/// Rows a folder gathers before the codecs and dictionaries of its columns are chosen from
/// them (see [`tune_columns`]): all of a type smaller than this (or than a row group).
pub(super) const TUNE_ROWS: usize = 8192;

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
    pub(super) fn tune(&self, slot: &mut Slot) -> Result<RecordBatch> {
        let first = arrow::compute::concat_batches(&self.schema, &std::mem::take(&mut slot.first))?;
        slot.first_rows = 0;
        let props = tune_columns(&self.file.lock().expect("no writer panicked").props, &first);
        self.tuned.get_or_init(|| Arc::new(props));
        Ok(first)
    }

    /// The shape of the leaf columns `kept` (over the typed schema's), with the first of each
    /// top-level field that has none kept too.
    pub(super) fn shape(&self, mut kept: Vec<bool>) -> Result<Shape> {
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

    pub(super) fn push(&self, files: &FileSet, batch: &RecordBatch, start: usize) -> Result<()> {
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

    pub(super) fn finish_row_group(&self, files: &FileSet, rg: &RowGroup) -> Result<()> {
        let chunks = rg.close()?;
        self.file
            .lock()
            .expect("no writer panicked")
            .append(files, chunks, &rg.shape.root)
    }

    /// Finishes the row group in progress, if any, or writes the rows still gathered for
    /// choosing codecs (a type smaller than [`TUNE_ROWS`]) as one: a folder has its row group
    /// in progress or those rows, never both (the first row group starts from them).
    pub(super) fn flush(&self, files: &FileSet) -> Result<()> {
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
    pub(super) fn open(&self) -> Option<(usize, usize)> {
        let slot = self.current.lock().expect("no writer panicked");
        slot.rg
            .as_ref()
            .map(|rg| (rg.shape.leaves, rg.bytes.load(Ordering::Relaxed)))
    }
}
