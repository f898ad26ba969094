//! `convert`: the parallel pipeline from NDJSON sources to a Parquet dataset per resource type.
//!
//! One reader (this thread) cuts the sources into chunks of whole lines; each worker thread parses
//! lines, routes every resource to the [`ResourceDecoder`] of its type and encodes the batches into
//! Parquet row groups, which go to the one file of their type (see [`writer`]). Locally,
//! everything is written under `OUT/.fhir2parquet-tmp-<run>/`; on an object store, every file is
//! a multipart upload left incomplete. Either way the run is published at the end (see
//! [`publish`]), so a run that is killed leaves nothing that looks complete.

mod commit;
mod fit;
pub mod merge;
mod partition;
mod publish;
mod rejects;
mod summary;
mod writer;

use std::collections::{BTreeMap, HashMap};

use rustc_hash::FxHashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::dataset::{unify, DataFile, Format};
use crate::decode::{OverflowStats, ResourceDecoder};
use crate::input::{self, Chunk, Source};
use crate::json::{self, Json};
use crate::schema::FhirVersion;
use crate::store::Location;

pub use partition::{date_elements, PartitionSpec};
pub use rejects::RejectReason;
pub use summary::{InputRecord, RunRecord, TypeRecord};
pub use writer::{Codec, Columns, WriteOptions};

/// Everything `convert` needs besides the inputs.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    pub out: Location,
    /// Delta tables (the default) or plain Parquet folders.
    pub format: crate::dataset::Format,
    /// Convert only this shard of the inputs.
    pub shard: Option<Shard>,
    /// Apply the inputs as a change set by `id` and `meta.lastUpdated`, with the deletions of
    /// their manifests' `deleted` files (see [`merge`]).
    pub merge: bool,
    pub append: bool,
    /// The FHIR version of the inputs. `None`: the version of OUT's tables when adding to them
    /// (`append`, `merge`), else R4.
    pub fhir_version: Option<crate::schema::FhirVersion>,
    /// Wait for another run writing OUT instead of failing at once.
    pub wait: bool,
    /// What an `export` fetched the input from (server, request, transactionTime), for the
    /// run record.
    pub export: Option<serde_json::Value>,
    pub partition_by: Vec<PartitionSpec>,
    pub write: WriteOptions,
    pub threads: usize,
    /// Sources read at once, each by a thread of its own (downloads at once, for `export`).
    pub readers: usize,
    /// A source that cannot be read to its end fails the run (nothing is published), instead
    /// of being recorded as a problem of a published run (`export`: a download that failed).
    pub strict_inputs: bool,
    pub batch_rows: usize,
    pub progress: bool,
    /// A resource type whose lines are headers of the files, not data: counted per input, not
    /// converted (`Parameters` in an export organized by patient, `organizeOutputBy`).
    pub header_type: Option<String>,
    /// Where a caller follows the run (the Python package's progress bars): bytes to read,
    /// bytes read, resources converted, updated as the run goes.
    pub watch: Option<Arc<Progress>>,
}

impl ConvertOptions {
    /// The command line's defaults: Delta tables replaced, zstd, one worker per core.
    pub fn new(out: impl Into<Location>) -> ConvertOptions {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        ConvertOptions {
            out: out.into(),
            format: crate::dataset::Format::Delta,
            shard: None,
            merge: false,
            append: false,
            fhir_version: None,
            wait: false,
            export: None,
            partition_by: Vec::new(),
            write: WriteOptions::default(),
            threads: 0,
            readers: 0,
            strict_inputs: false,
            batch_rows: 8192,
            progress: false,
            header_type: None,
            watch: None,
        }
        .with_threads(cores)
    }

    /// `threads` workers (at least one), and a reader for every four of them.
    pub fn with_threads(self, threads: usize) -> ConvertOptions {
        let threads = threads.max(1);
        ConvertOptions {
            threads,
            readers: (threads / 4).max(1),
            ..self
        }
    }
}

/// A run's progress as it goes, for a caller to read from another thread.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes of all the inputs (0 where sizes are unknown: stdin, some stores).
    pub total_bytes: AtomicU64,
    pub read_bytes: AtomicU64,
    pub resources: AtomicU64,
}

/// The folder of rejected lines in OUT.
use crate::dataset::layout::{tmp_dir, TMP_PREFIX};
/// The name of the run record in OUT.
pub use crate::dataset::layout::{REJECTS_DIR, RUN_RECORD};
/// What the Parquet row groups in progress may hold together: past it the largest is written
/// out, so memory grows neither with the input nor with the number of threads. Each type (or
/// partition) has one row group in progress, shared by the workers (see [`writer::Folder`]).
const BUFFER_BYTES: usize = 192 << 20;
/// The JSON a batch is cut at (besides `--batch-rows`): 8,192 resources of a megabyte each
/// would be gigabytes of Arrow arrays.
const BATCH_JSON_BYTES: usize = 64 << 20;
/// Leaf columns of the row groups in progress, per thread. The Parquet writer holds a codec
/// per column, about 100 KB with zstd: past this budget the least recently used row group is
/// finished.
const OPEN_COLUMNS: usize = 1_500;
/// Chunks of input after which a worker hands in the rows of a type it no longer meets.
const IDLE_CHUNKS: u64 = 2;

#[derive(Default)]
struct TypeState {
    /// Per partition: the decoder, the folder (its file and the row group all workers
    /// share), and the JSON bytes of the rows decoded since the last batch.
    parts: FxHashMap<String, (ResourceDecoder, Arc<writer::Folder>, usize)>,
    rows: u64,
    bytes_in: u64,
    busy: Duration,
    /// The worker's chunk count when it last met this type.
    last_chunk: u64,
    /// Whether the decoders were replaced by empty ones since the type was last met.
    released: bool,
    /// What replaced decoders kept in overflow.
    overflow: OverflowStats,
}

struct Worker<'a> {
    opts: &'a ConvertOptions,
    files: &'a writer::FileSet,
    sources: &'a [Source],
    version: FhirVersion,
    types: FxHashMap<String, TypeState>,
    rejects: rejects::RejectWriter,
    reject_counts: BTreeMap<RejectReason, u64>,
    /// Lines rejected as of a type the run's version does not have but another does.
    other_versions_types: BTreeMap<String, u64>,
    per_source: HashMap<usize, u64>,
    /// Header lines (see [`ConvertOptions::header_type`]) per source.
    headers: HashMap<usize, u64>,
    /// Where each line's JSON is parsed.
    arena: bumpalo::Bump,
    resources: &'a AtomicU64,
    /// Which field of a row group this worker encodes first (workers start apart).
    start: usize,
    /// Chunks this worker has taken.
    chunks: u64,
    /// Input lines a merge does not apply: (source, line).
    skip: Option<&'a std::collections::HashSet<(usize, u64)>>,
}

/// What a worker hands back.
struct WorkerResult {
    types: HashMap<String, TypeRecord>,
    rejects: u64,
    reject_counts: BTreeMap<RejectReason, u64>,
    other_versions_types: BTreeMap<String, u64>,
    reject_file: Option<PathBuf>,
    per_source: HashMap<usize, u64>,
    headers: HashMap<usize, u64>,
}

impl Worker<'_> {
    fn chunk(&mut self, chunk: &Chunk) -> Result<()> {
        let mut count = 0;
        let data = &chunk.data[..];
        let mut start = 0;
        let ends = memchr::memchr_iter(b'\n', data).chain(std::iter::once(data.len()));
        for (this, end) in (chunk.first_line..).zip(ends) {
            let raw = &data[start..end];
            start = end + 1;
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            if raw.iter().all(|c| c.is_ascii_whitespace()) {
                continue;
            }
            count += 1;
            if self.skip.is_some_and(|s| s.contains(&(chunk.source, this))) {
                continue;
            }
            self.line(chunk.source, this, raw)?;
        }
        *self.per_source.entry(chunk.source).or_default() += count;
        self.resources.fetch_add(count, Ordering::Relaxed);
        self.chunks += 1;
        self.hand_in_idle()
    }

    /// Hands the rows of types this worker has not met for [`IDLE_CHUNKS`] chunks to their
    /// row groups: the input has moved on (to another file), and the type's row group may be
    /// finished before this worker would meet the type again, leaving these rows for a small
    /// row group of their own at the end. The type's decoders are replaced by empty ones: after
    /// a batch, a decoder's builders keep the batch's size, which for a type the input has left
    /// is memory held for nothing (up to a batch per type per worker).
    fn hand_in_idle(&mut self) -> Result<()> {
        let mut handed = false;
        for (rt, state) in self.types.iter_mut() {
            if state.released || state.last_chunk + IDLE_CHUNKS > self.chunks {
                continue;
            }
            for (decoder, w, pending) in state.parts.values_mut() {
                if !decoder.is_empty() {
                    *pending = 0;
                    w.write(self.files, &decoder.flush()?, self.start)?;
                    handed = true;
                }
                state.overflow.merge(decoder.stats());
                *decoder = ResourceDecoder::new(self.version, rt)
                    .expect("a resource type: checked when first seen");
            }
            state.released = true;
        }
        if handed {
            self.bound_memory()?;
        }
        Ok(())
    }

    fn line(&mut self, source: usize, line: u64, raw: &[u8]) -> Result<()> {
        // The line's JSON lives in the worker's arena, emptied (not freed) after each line.
        let mut arena = std::mem::take(&mut self.arena);
        let result = self.parsed_line(source, line, raw, &arena);
        arena.reset();
        self.arena = arena;
        result
    }

    fn parsed_line(
        &mut self,
        source: usize,
        line: u64,
        raw: &[u8],
        arena: &bumpalo::Bump,
    ) -> Result<()> {
        let started = Instant::now();
        let text = match std::str::from_utf8(raw) {
            Ok(t) => t,
            Err(e) => {
                let detail = format!("invalid UTF-8 at byte {}", e.valid_up_to());
                return self.reject(source, line, RejectReason::NotUtf8, &detail, raw);
            }
        };
        let doc = match json::parse_in(text, arena) {
            Ok(d) => d,
            Err(e) => return self.reject(source, line, RejectReason::NotJson, &e.to_string(), raw),
        };
        if !matches!(doc, Json::Obj(_)) {
            let detail = format!("the line holds a JSON {}", doc.kind());
            return self.reject(source, line, RejectReason::NotAnObject, &detail, raw);
        }
        let Some(rt) = doc.get("resourceType").and_then(Json::as_str) else {
            return self.reject(
                source,
                line,
                RejectReason::NoResourceType,
                "at /resourceType",
                raw,
            );
        };
        if self.opts.header_type.as_deref() == Some(rt) {
            *self.headers.entry(source).or_default() += 1;
            return Ok(());
        }
        let part = self
            .opts
            .partition_by
            .iter()
            .find(|p| p.resource_type == rt)
            .map(|p| format!("{}={}", p.column(), p.value(&doc)))
            .unwrap_or_default();
        // One lookup per line for the common case, a type already seen.
        let state = match self.types.get_mut(rt) {
            Some(state) => state,
            None => {
                if crate::schema::node::resource_members(self.version, rt).is_none() {
                    // Types of another version are counted by name, for the summary's hint
                    // (any other text is not a name to repeat).
                    if FhirVersion::any_has_resource(rt) {
                        *self.other_versions_types.entry(rt.to_string()).or_default() += 1;
                    }
                    let detail = "at /resourceType: not a resource type of this FHIR version";
                    let reason = RejectReason::UnknownResourceType;
                    return self.reject(source, line, reason, detail, raw);
                }
                commit::prepare_table(self.opts, self.version, rt);
                self.types.entry(rt.to_string()).or_default()
            }
        };
        let (decoder, w, pending) = match state.parts.get_mut(&part) {
            Some(both) => both,
            None => {
                let decoder = ResourceDecoder::new(self.version, rt)
                    .expect("a resource type: checked when first seen");
                let dir = match part.is_empty() {
                    true => PathBuf::from(rt),
                    false => PathBuf::from(rt).join(&part),
                };
                let props =
                    self.opts
                        .write
                        .properties(rt, self.version.release(), &decoder.schema());
                let w = self.files.folder(
                    &dir,
                    decoder.schema(),
                    props,
                    self.opts.write.row_group_rows,
                )?;
                state.parts.entry(part).or_insert((decoder, w, 0))
            }
        };
        decoder.decode(&doc);
        *pending += raw.len();
        // A batch is cut at `--batch-rows` rows or BATCH_JSON_BYTES of JSON, whichever comes
        // first: 8,192 resources of a megabyte each would be gigabytes of Arrow arrays.
        let wrote = decoder.len() >= self.opts.batch_rows || *pending >= BATCH_JSON_BYTES;
        if wrote {
            *pending = 0;
            let batch = decoder.flush()?;
            w.write(self.files, &batch, self.start)?;
        }
        state.rows += 1;
        state.last_chunk = self.chunks;
        state.released = false;
        state.bytes_in += raw.len() as u64 + 1;
        state.busy += started.elapsed();
        if wrote {
            self.bound_memory()?;
        }
        Ok(())
    }

    /// Keeps the row groups in progress within [`OPEN_COLUMNS`] per thread and
    /// [`BUFFER_BYTES`].
    fn bound_memory(&mut self) -> Result<()> {
        let threads = self.opts.threads.max(1);
        self.files.bound(OPEN_COLUMNS * threads, BUFFER_BYTES)
    }

    fn reject(
        &mut self,
        source: usize,
        line: u64,
        reason: RejectReason,
        detail: &str,
        raw: &[u8],
    ) -> Result<()> {
        *self.reject_counts.entry(reason).or_default() += 1;
        self.rejects
            .reject(&self.sources[source].display(), line, reason, detail, raw)
    }

    fn finish(self) -> Result<WorkerResult> {
        let mut types = HashMap::new();
        for (name, state) in self.types {
            let started = Instant::now();
            let mut rec = TypeRecord {
                rows: state.rows,
                input_bytes: state.bytes_in,
                ..Default::default()
            };
            let mut overflow = state.overflow;
            for (_, (mut decoder, w, _)) in state.parts {
                if !decoder.is_empty() {
                    w.write(self.files, &decoder.flush()?, self.start)?;
                }
                overflow.merge(decoder.stats());
            }
            rec.overflow = overflow;
            rec.seconds = (state.busy + started.elapsed()).as_secs_f64();
            types.insert(name, rec);
        }
        Ok(WorkerResult {
            types,
            rejects: self.rejects.count,
            reject_counts: self.reject_counts,
            other_versions_types: self.other_versions_types,
            reject_file: self.rejects.finish()?,
            per_source: self.per_source,
            headers: self.headers,
        })
    }
}

/// Runs a conversion. Returns the run record; the caller decides the exit code from it.
pub fn run<L: Clone + Into<Location>>(inputs: &[L], opts: &ConvertOptions) -> Result<RunRecord> {
    let inputs: Vec<Location> = inputs.iter().cloned().map(Into::into).collect();
    let mut sources = input::resolve(&inputs)?;
    if let Some(shard) = opts.shard {
        sources = shard.take(sources);
    }
    let deletes = match opts.merge {
        true => merge::deletes(&inputs)?,
        false => Vec::new(),
    };
    if opts.merge && deletes.is_empty() {
        eprintln!(
            "note: this change set lists no deletions (no manifest with a `deleted` section among \
             the inputs; some servers send none): resources deleted at the source stay in the \
             tables"
        );
    }
    run_with(&sources, opts, &deletes)
}

/// `--shard I/N`: this run converts the I-th of every N inputs (files, manifest entries), so N
/// runs, on one machine or many, convert an export into one dataset together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 1 to `of`.
    pub index: usize,
    pub of: usize,
}

impl Shard {
    pub fn parse(s: &str) -> Result<Shard> {
        let parsed = s
            .split_once('/')
            .and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
        match parsed {
            Some((index, of)) if of >= 1 && (1..=of).contains(&index) => Ok(Shard { index, of }),
            _ => anyhow::bail!(
                "--shard {s}: give I/N with 1 <= I <= N, e.g. --shard 2/4 for the second of four runs"
            ),
        }
    }

    /// The inputs of this shard, in the order given.
    pub fn take<T>(self, all: Vec<T>) -> Vec<T> {
        all.into_iter()
            .enumerate()
            .filter(|(i, _)| i % self.of == self.index - 1)
            .map(|(_, s)| s)
            .collect()
    }
}

/// Runs a conversion of sources already resolved (`export` makes them from a server's files).
pub fn run_sources(sources: &[Source], opts: &ConvertOptions) -> Result<RunRecord> {
    run_with(sources, opts, &[])
}

/// A conversion of sources already resolved, or with `opts.merge` their merge with `deletes`
/// (`export --since`: the server's files and its manifest's `deleted` section).
pub fn run_merge(
    sources: &[Source],
    opts: &ConvertOptions,
    deletes: &[merge::Delete],
) -> Result<RunRecord> {
    if opts.merge && deletes.is_empty() {
        eprintln!(
            "note: the server listed no deleted resources (its manifest has no `deleted` section; \
             some servers send none): resources deleted at the source stay in the tables"
        );
    }
    run_with(sources, opts, deletes)
}

/// A conversion, or with `--merge` the merge of `sources` and `deletes`.
fn run_with(
    sources: &[Source],
    opts: &ConvertOptions,
    deletes: &[merge::Delete],
) -> Result<RunRecord> {
    let started = Instant::now();
    // Unique per process and second; a second run of one process within the same second (a
    // library caller, `export` runs) is told apart by its number: its files must not take the
    // names of the first run's.
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    let run_id = format!(
        "{}{:04x}{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S"),
        std::process::id() & 0xffff,
        match n {
            0 => String::new(),
            n => format!("n{n}"),
        }
    );
    if let Location::Local(out) = &opts.out {
        fs_err::create_dir_all(out)
            .with_context(|| format!("cannot create the output folder {}", out.display()))?;
    }
    // The data's FHIR version, checked against OUT's before anything is taken or written.
    let version = commit::check_version(opts)?;
    fit::prepare(version);
    // One writer at a time (see `dataset::lock`); held until the run is published. Appends to
    // Delta tables need none: each commits with the log's optimistic concurrency, so several
    // runs (`--shard`, other machines) add to one dataset at once.
    let lock = match opts.format == Format::Delta && opts.append && !opts.merge {
        true => None,
        false => Some(crate::dataset::lock::acquire(
            &opts.out, &run_id, opts.wait,
        )?),
    };
    if let Some(note) = lock.as_ref().and_then(|l| l.took_over.as_ref()) {
        eprintln!("note: {note}");
    }
    commit::check_format(opts)?;
    // A merge decides, holding the dataset, which input lines and table rows make the result.
    let plan = match opts.merge {
        true => Some(merge::plan(sources, deletes, &opts.out, version)?),
        false => None,
    };
    // Locally the run is written in a folder of OUT; on a store, straight to its place as
    // uploads completed at the end, with only the rejects in a local folder.
    let (tmp, target) = match &opts.out {
        Location::Local(out) => {
            // What killed runs left, cleaned by the writer that holds the dataset.
            if lock.is_some() {
                for run in crate::dataset::commit::recover(out)? {
                    eprintln!(
                        "note: finished publishing run {run}, which was stopped while publishing"
                    );
                }
                clean_stale_tmp(out);
            }
            let tmp = out.join(tmp_dir(&run_id));
            (tmp.clone(), writer::Target::Dir(tmp))
        }
        Location::Remote(remote) => {
            if lock.is_some() {
                publish::clean_remote(remote)?;
            }
            let tmp = std::env::temp_dir().join(format!("fhir2parquet-{run_id}"));
            (tmp, writer::Target::Store(remote.clone()))
        }
    };
    fs_err::create_dir_all(&tmp)?;
    let run = Run {
        id: &run_id,
        version,
        started,
        plan: plan.as_ref(),
    };
    let result = convert(sources, opts, &run, &tmp, target);
    // The tables as the plan read them (their parsed schemas) and its id sets.
    crate::background::drop(plan);
    let committed = match &opts.out {
        Location::Local(out) => crate::dataset::commit::is_pending(out, &run_id),
        Location::Remote(_) => false,
    };
    // A failed run removes its files, unless it was committed: then the next run (or reader)
    // finishes publishing them.
    if matches!(opts.out, Location::Remote(_)) || (result.is_err() && !committed) {
        let _ = fs_err::remove_dir_all(&tmp);
    }
    drop(lock);
    result
}

/// A run, besides its options: its id, the FHIR version, when it started and, for a merge, the
/// plan.
struct Run<'a> {
    id: &'a String,
    version: FhirVersion,
    started: Instant,
    plan: Option<&'a merge::Plan>,
}

fn convert(
    sources: &[Source],
    opts: &ConvertOptions,
    run: &Run,
    tmp: &PathBuf,
    target: writer::Target,
) -> Result<RunRecord> {
    let (version, run_id, started, plan) = (run.version, run.id, run.started, run.plan);
    let total: u64 = sources.iter().map(|s| s.size).sum();
    let bar = summary::progress_bar(opts.progress, total);
    if let Some(w) = &opts.watch {
        w.total_bytes.store(total, Ordering::Relaxed);
    }
    let read_bytes = Arc::new(AtomicU64::new(0));
    let resources = AtomicU64::new(0);
    let threads = opts.threads.max(1);
    let (tx, rx) = crossbeam_channel::bounded::<Chunk>(threads * 2);
    // Chunk buffers go back to the reader when a worker is done with them.
    let (recycle, recycled) = crossbeam_channel::bounded::<Vec<u8>>(threads * 2 + 2);

    let files = writer::FileSet::new(
        target,
        run_id.clone(),
        opts.write.target_file_bytes,
        opts.write.columns,
    );
    let next = std::sync::atomic::AtomicUsize::new(0);
    let records = std::sync::Mutex::new(vec![None; sources.len()]);
    let results: Vec<Result<WorkerResult>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|id| {
                let rx = rx.clone();
                let recycle = recycle.clone();
                let (tmp, resources, files) = (&tmp, &resources, &files);
                scope.spawn(move || -> Result<WorkerResult> {
                    let mut w = Worker {
                        opts,
                        files,
                        sources,
                        version,
                        types: FxHashMap::default(),
                        rejects: rejects::RejectWriter::new(
                            tmp.join(REJECTS_DIR)
                                .join(format!("rejects-{run_id}-{id}.ndjson")),
                        ),
                        reject_counts: BTreeMap::new(),
                        other_versions_types: BTreeMap::new(),
                        per_source: HashMap::new(),
                        headers: HashMap::new(),
                        arena: bumpalo::Bump::new(),
                        resources,
                        start: id * 7,
                        chunks: 0,
                        skip: plan.map(|p| &p.skip),
                    };
                    let mut failed = None;
                    for chunk in rx.iter() {
                        if failed.is_none() {
                            if let Err(e) = w.chunk(&chunk) {
                                failed = Some(e);
                            }
                        }
                        let _ = recycle.try_send(chunk.data);
                    }
                    match failed {
                        Some(e) => Err(e),
                        None => w.finish(),
                    }
                })
            })
            .collect();
        drop(rx);
        // Readers take the next source until none is left; chunks of all of them go to the
        // same workers, each chunk knowing its source and first line.
        let readers = opts.readers.clamp(1, sources.len().max(1));
        for _ in 0..readers {
            let (tx, recycled) = (tx.clone(), recycled.clone());
            let (next, records, bar, read_bytes, resources) =
                (&next, &records, &bar, &read_bytes, &resources);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(source) = sources.get(i) else {
                    break;
                };
                let outcome =
                    input::read_chunks(i, source, read_bytes.clone(), &recycled, |chunk| {
                        bar.set_position(read_bytes.load(Ordering::Relaxed));
                        let n = resources.load(Ordering::Relaxed);
                        if let Some(w) = &opts.watch {
                            w.read_bytes
                                .store(read_bytes.load(Ordering::Relaxed), Ordering::Relaxed);
                            w.resources.store(n, Ordering::Relaxed);
                        }
                        let secs = started.elapsed().as_secs_f64().max(1e-3);
                        bar.set_message(format!("{n} resources, {:.0}/s", n as f64 / secs));
                        tx.send(chunk).is_ok()
                    });
                let rec = match outcome {
                    Ok(o) => InputRecord {
                        path: source.display(),
                        size: source.size.max(o.bytes),
                        blake3: Some(o.blake3),
                        lines: o.lines,
                        expected_count: source.expected_count,
                        resources: 0,
                        headers: 0,
                        error: o.error,
                    },
                    Err(e) => InputRecord {
                        path: source.display(),
                        size: source.size,
                        blake3: None,
                        lines: 0,
                        expected_count: source.expected_count,
                        resources: 0,
                        headers: 0,
                        error: Some(format!("cannot read: {e}")),
                    },
                };
                records.lock().expect("no reader panicked")[i] = Some(rec);
            });
        }
        drop(tx);
        handles
            .into_iter()
            .map(|h| h.join().expect("a worker panicked"))
            .collect()
    });
    let input_records: Vec<InputRecord> = records
        .into_inner()
        .expect("no reader panicked")
        .into_iter()
        .map(|r| r.expect("every source was read"))
        .collect();
    bar.finish_and_clear();

    // A worker's error fails the run: nothing of it is published.
    let mut worker_results = Vec::new();
    for r in results {
        match r {
            Ok(r) => worker_results.push(r),
            Err(e) => {
                files.abort();
                return Err(e);
            }
        }
    }
    if opts.strict_inputs {
        if let Some(i) = input_records.iter().find(|i| i.error.is_some()) {
            files.abort();
            anyhow::bail!("{}: {}", i.path, i.error.as_deref().unwrap_or_default());
        }
    }
    let written = files.finish(threads)?;
    let mut record = RunRecord::new(run_id, version.release(), opts);
    record.inputs = input_records;
    let mut reject_files = Vec::new();
    for r in worker_results {
        for (t, rec) in r.types {
            record.types.entry(t).or_default().merge(&rec);
        }
        record.rejects.count += r.rejects;
        for (k, v) in r.reject_counts {
            *record.rejects.by_reason.entry(k).or_default() += v;
        }
        for (k, v) in r.other_versions_types {
            *record.rejects.other_versions_types.entry(k).or_default() += v;
        }
        if let Some(f) = r.reject_file {
            record.rejects.files.push(
                f.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
            );
            reject_files.push(f);
        }
        for (s, n) in r.per_source {
            record.inputs[s].resources += n;
        }
        for (s, n) in r.headers {
            record.inputs[s].resources -= n;
            record.inputs[s].headers += n;
        }
    }
    record.version_hint = fit::version_hint(&record, version);
    // One Parquet schema per table: files of a type that hold different columns (see
    // `dataset::unify`) are made to agree before anyone sees them.
    let widened = match &opts.out {
        Location::Local(out) => unify_run(out, tmp, &written, opts, version)?,
        Location::Remote(_) => Default::default(),
    };
    // Files and bytes per type, from the folders its files went to.
    for (rt, (done, seconds)) in &widened {
        let rec = record.types.entry(rt.clone()).or_default();
        rec.add_widened(done, *seconds);
    }
    for (dir, f) in &written {
        let rec = record.types.entry(writer::folder_type(dir)).or_default();
        rec.files += f.names.len() as u64;
        rec.parquet_bytes += f.bytes;
    }
    // The last point a stop asked for (Ctrl-C in an export) ends the run with nothing published.
    crate::interrupt::check()?;
    if opts.format == Format::Delta {
        record.seconds = started.elapsed().as_secs_f64();
        match &opts.out {
            Location::Local(out) => {
                commit::local(out, tmp, &written, opts, version, &mut record, plan)?
            }
            Location::Remote(remote) => commit::remote(
                remote,
                written,
                &reject_files,
                opts,
                version,
                &mut record,
                plan,
            )?,
        }
        return Ok(record);
    }
    let mut uploads = Vec::new();
    for (dir, f) in written {
        let folder = dir.to_string_lossy().replace('\\', "/");
        uploads.extend(f.pending.into_iter().map(|p| (folder.clone(), p)));
    }
    match &opts.out {
        Location::Local(out) => {
            record.seconds = started.elapsed().as_secs_f64();
            let previous = fs_err::read_to_string(out.join(RUN_RECORD)).ok();
            let text = record.render(previous.as_deref())?;
            crate::dataset::commit::publish(out, tmp, run_id, opts.append, &text)?;
            if opts.append {
                unify_published(&opts.out, record.types.keys(), opts, version);
            }
        }
        Location::Remote(remote) => {
            record.seconds = started.elapsed().as_secs_f64();
            publish::RemoteRun {
                remote,
                run_id,
                append: opts.append,
                uploads,
                rejects: reject_files,
            }
            .publish(&mut record)?;
            unify_published(&opts.out, record.types.keys(), opts, version);
        }
    }
    Ok(record)
}

/// Widens the run's files of each type (in `tmp`) to the columns of all of the type's files,
/// those of earlier runs included with `--append`. Per type, what was rewritten and the seconds
/// it took.
fn unify_run(
    out: &Path,
    tmp: &Path,
    written: &FxHashMap<PathBuf, writer::FolderFiles>,
    opts: &ConvertOptions,
    version: FhirVersion,
) -> Result<BTreeMap<String, (unify::Unified, f64)>> {
    let mut by_type: BTreeMap<String, Vec<DataFile>> = BTreeMap::new();
    for (dir, f) in written {
        let files = by_type.entry(writer::folder_type(dir)).or_default();
        files.extend(
            f.names
                .iter()
                .map(|n| DataFile::Local(tmp.join(dir).join(n))),
        );
    }
    let dataset = Location::Local(out.to_path_buf());
    let mut widened = BTreeMap::new();
    for (rt, mine) in by_type {
        // A Delta table's earlier files stay as they are: Delta readers give NULL for the
        // columns a file lacks, and a committed file is never rewritten.
        let others = match opts.append && opts.format == Format::Parquet {
            true => unify::table_files(&dataset, &rt)?,
            false => Vec::new(),
        };
        let started = Instant::now();
        let done = unify_type(&rt, &mine, &others, None, opts, version)?;
        if done.widened > 0 {
            widened.insert(rt, (done, started.elapsed().as_secs_f64()));
        }
    }
    Ok(widened)
}

/// [`unify::unify`] of the files of the type `rt`, written as the run writes them.
fn unify_type(
    rt: &str,
    mine: &[DataFile],
    others: &[DataFile],
    remote: Option<&crate::store::Remote>,
    opts: &ConvertOptions,
    version: FhirVersion,
) -> Result<unify::Unified> {
    let schema = match crate::schema::node::arrow_schema(version, rt) {
        Some(s) if mine.len() + others.len() > 1 => s,
        _ => return Ok(Default::default()),
    };
    let props = opts.write.properties(rt, version.release(), &schema);
    let leaves = unify::Leaves::new(Arc::new(schema))?;
    unify::unify(&leaves, mine, others, remote, &props)
}

/// After a run is published: widens the files of the types it wrote that hold fewer columns
/// than others of the same type. Locally that is an `--append` run's earlier files (the run's
/// own were widened before it was published, see [`unify_run`]); on a store, where the run's
/// files are uploads that become readable only when it commits, any. The run is committed
/// already: a failure here leaves the files as they were (their data whole) and is reported,
/// not fatal.
fn unify_published<'a>(
    dataset: &Location,
    types: impl Iterator<Item = &'a String>,
    opts: &ConvertOptions,
    version: FhirVersion,
) {
    let remote = match dataset {
        Location::Remote(r) => Some(r),
        Location::Local(_) => None,
    };
    for rt in types {
        let result = unify::table_files(dataset, rt)
            .and_then(|files| unify_type(rt, &files, &[], remote, opts, version));
        if let Err(e) = result {
            eprintln!(
                "warning: the files of {rt} hold different columns and were not made to agree \
                 ({e:#}); read them with a reader that merges schemas by name"
            );
        }
    }
}

/// Temporary folders of killed runs are never read; remove them.
fn clean_stale_tmp(out: &Path) {
    if let Ok(entries) = fs_err::read_dir(out) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let _ = fs_err::remove_dir_all(e.path());
            }
        }
    }
}
