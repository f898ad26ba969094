//! `upload`: a converted dataset from a local folder to an object store.
//!
//! Files go up a few at a time, large ones as parallel multipart uploads; each carries its
//! BLAKE3 in the object's metadata (`blake3`), so a second run skips every file already there
//! with the same size and checksum, and an interrupted upload resumes where it stopped. The run
//! record `_fhir2parquet.json` goes last: a dataset whose record is there is complete.
//!
//! A Delta table is copied as its current version: the files that version names (never the
//! files of older versions, nor the local log), then one commit at the destination whose
//! version holds exactly those files (the destination keeps its own history). Uploading again
//! after a re-convert gives the destination the new rows, never both; uploading an unchanged
//! table again commits nothing.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use object_store::{
    Attribute, Attributes, GetOptions, ObjectStore, PutMultipartOptions, PutOptions, PutPayload,
    WriteMultipart,
};

use crate::dataset::layout::RUN_RECORD;
use crate::store::{block_on, Remote, PART_BYTES};

/// Files uploading at once.
const FILES_AT_ONCE: usize = 4;
/// Parts of one file uploading at once.
const PARTS_AT_ONCE: usize = 4;
/// The metadata key of a file's checksum.
const CHECKSUM_KEY: &str = "blake3";

/// What an upload did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct UploadSummary {
    pub sent_files: u64,
    pub sent_bytes: u64,
    pub skipped_files: u64,
    pub skipped_bytes: u64,
    pub seconds: f64,
}

struct LocalFile {
    path: PathBuf,
    /// `/`-separated, relative to the dataset.
    rel: String,
    size: u64,
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<LocalFile>) -> Result<()> {
    for e in fs_err::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        // A Delta table is sent as its current version (see `run`).
        if dir == root && e.path().join(crate::dataset::delta::LOG_DIR).is_dir() {
            continue;
        }
        // Temporary folders and files of runs in progress or killed, the lock and the journal
        // of a publish are not part of a dataset.
        if name.starts_with('.')
            || name == crate::dataset::lock::LOCK
            || name.starts_with(crate::dataset::commit::JOURNAL_PREFIX)
        {
            continue;
        }
        let path = e.path();
        if e.file_type()?.is_dir() {
            walk(root, &path, out)?;
        } else {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .iter()
                .map(|p| p.to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            out.push(LocalFile {
                size: e.metadata()?.len(),
                path,
                rel,
            });
        }
    }
    Ok(())
}

fn checksum(path: &Path) -> Result<String> {
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(path)?)?;
    Ok(h.finalize().to_hex().to_string())
}

/// Whether the object is there with this size and checksum.
async fn already_there(remote: &Remote, f: &LocalFile, sum: &str) -> Result<bool> {
    let path = remote.path(&f.rel);
    let head = GetOptions {
        head: true,
        ..Default::default()
    };
    match remote.store.get_opts(&path, head).await {
        Ok(r) => Ok(r.meta.size == f.size
            && r.attributes
                .get(&Attribute::Metadata(CHECKSUM_KEY.into()))
                .is_some_and(|v| v.as_ref() == sum)),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(remote.explain(e, &path)),
    }
}

async fn send(
    remote: &Remote,
    f: &LocalFile,
    sum: String,
    sent: &indicatif::ProgressBar,
) -> Result<()> {
    let path = remote.path(&f.rel);
    let mut attributes = Attributes::new();
    attributes.insert(Attribute::Metadata(CHECKSUM_KEY.into()), sum.into());
    let explain = |e| remote.explain(e, &path);
    if f.size <= PART_BYTES as u64 {
        let data = fs_err::read(&f.path)?;
        let opts = PutOptions {
            attributes,
            ..Default::default()
        };
        remote
            .store
            .put_opts(&path, PutPayload::from(data), opts)
            .await
            .map_err(explain)?;
        sent.inc(f.size);
        return Ok(());
    }
    let opts = PutMultipartOptions {
        attributes,
        ..Default::default()
    };
    let upload = remote
        .store
        .put_multipart_opts(&path, opts)
        .await
        .map_err(explain)?;
    let mut w = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
    let mut file = std::fs::File::open(&f.path)?;
    let mut buf = vec![0; PART_BYTES];
    loop {
        let n = read_full(&mut file, &mut buf)?;
        if n == 0 {
            break;
        }
        if let Err(e) = w.wait_for_capacity(PARTS_AT_ONCE).await {
            return Err(explain(e));
        }
        w.write(&buf[..n]);
        sent.inc(n as u64);
    }
    w.finish().await.map_err(explain)?;
    Ok(())
}

fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Uploads `dataset` to `dest`.
pub fn run(dataset: &Path, dest: &Remote, progress: bool) -> Result<UploadSummary> {
    let started = Instant::now();
    if !dataset.join(RUN_RECORD).is_file() {
        bail!(
            "{} has no {RUN_RECORD}: give a folder written by `fhir2parquet convert`",
            dataset.display()
        );
    }
    // The dataset as published: finish a publish a killed run left; refuse while one writes,
    // and hold the dataset's lock to the end, so that no convert replaces what is being sent.
    let _reader = crate::dataset::lock::try_acquire(dataset, "upload").ok_or_else(|| {
        match crate::dataset::lock::holder(dataset) {
            Some(owner) => anyhow::anyhow!(
                "{} is being written by run {} (pid {}): upload it when that run is done",
                dataset.display(),
                owner.run_id,
                owner.pid
            ),
            None => anyhow::anyhow!(
                "cannot lock {} for the upload: check that the folder is writable",
                dataset.display()
            ),
        }
    })?;
    crate::dataset::finish_abandoned_publish(dataset);
    crate::dataset::commit::failpoint("upload-locked");
    // One writer per destination, as for convert.
    let run_id = format!("upload-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S"));
    let _lock = crate::dataset::lock::acquire(
        &crate::store::Location::Remote(dest.clone()),
        &run_id,
        false,
    )?;
    let mut files = Vec::new();
    walk(dataset, dataset, &mut files)?;
    let local = crate::store::Location::Local(dataset.to_path_buf());
    let tables: Vec<crate::dataset::Table> = crate::dataset::tables(&local)?
        .into_iter()
        .filter(|t| t.delta.is_some())
        .collect();
    for t in &tables {
        let snap = t.delta.as_ref().expect("a Delta table");
        for (f, sf) in t.files.iter().zip(&snap.files) {
            if let crate::dataset::DataFile::Local(path) = f {
                files.push(LocalFile {
                    path: path.clone(),
                    rel: format!("{}/{}", t.name, sf.path),
                    size: sf.bytes,
                });
            }
        }
        // The deletion vector files the version names (a merged table), each once.
        let mut vectors = std::collections::BTreeSet::new();
        for sf in &snap.files {
            if let Some(dv) = &sf.deletion_vector {
                if let Some(rel) = crate::dataset::deletion::file_of(dv)? {
                    vectors.insert(rel);
                }
            }
        }
        for rel in vectors {
            let mut path = dataset.join(&t.name);
            path.extend(rel.split('/'));
            let size = fs_err::metadata(&path)?.len();
            files.push(LocalFile {
                path,
                rel: format!("{}/{rel}", t.name),
                size,
            });
        }
    }
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    let (record, data): (Vec<_>, Vec<_>) = files.into_iter().partition(|f| f.rel == RUN_RECORD);
    let total: u64 = data.iter().chain(&record).map(|f| f.size).sum();
    let bar = match progress {
        true => indicatif::ProgressBar::new(total).with_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
            )
            .expect("a valid template"),
        ),
        false => indicatif::ProgressBar::hidden(),
    };
    let summary = std::sync::Mutex::new(UploadSummary::default());
    let one = |f: LocalFile| {
        let (bar, summary) = (&bar, &summary);
        async move {
            let sum = checksum(&f.path)?;
            if already_there(dest, &f, &sum).await? {
                bar.inc(f.size);
                let mut s = summary.lock().expect("no upload panicked");
                s.skipped_files += 1;
                s.skipped_bytes += f.size;
                return Ok(());
            }
            send(dest, &f, sum, bar).await?;
            let mut s = summary.lock().expect("no upload panicked");
            s.sent_files += 1;
            s.sent_bytes += f.size;
            Ok::<_, anyhow::Error>(())
        }
    };
    block_on(async {
        let mut results =
            futures::stream::iter(data.into_iter().map(one)).buffer_unordered(FILES_AT_ONCE);
        while let Some(r) = results.next().await {
            r?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    // Each Delta table's files are there: one commit makes them the destination's version.
    let dest_location = crate::store::Location::Remote(dest.clone());
    for t in &tables {
        let snap = t.delta.as_ref().expect("a Delta table");
        let table = crate::dataset::delta::TableCommit {
            name: t.name.clone(),
            files: snap
                .files
                .iter()
                .map(|f| crate::dataset::delta::NewFile {
                    path: f.path.clone(),
                    bytes: f.bytes,
                    rows: f.rows,
                    deletion_vector: f.deletion_vector.clone(),
                })
                .collect(),
            partition_columns: snap.partition_columns.clone(),
            remove: Vec::new(),
            deletions: Vec::new(),
            base: None,
            home: None,
        };
        let overwrite = crate::dataset::delta::Mode::Overwrite;
        crate::dataset::delta::commit(&dest_location, &table, overwrite, &snap.properties)?;
    }
    block_on(async {
        // The run record last: once it is there, every file it describes is.
        for f in record {
            one(f).await?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    bar.finish_and_clear();
    let mut s = summary.into_inner().expect("no upload panicked");
    s.seconds = started.elapsed().as_secs_f64();
    Ok(s)
}

impl UploadSummary {
    pub fn print(&self, dest: &str, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        let mb = |b: u64| b as f64 / 1e6;
        writeln!(
            w,
            "{dest}: sent {} file(s), {:.2} MB, in {:.1} s ({:.1} MB/s); skipped {} file(s), \
             {:.2} MB, already there",
            self.sent_files,
            mb(self.sent_bytes),
            self.seconds,
            mb(self.sent_bytes) / self.seconds.max(1e-3),
            self.skipped_files,
            mb(self.skipped_bytes),
        )
    }
}
