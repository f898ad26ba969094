//! Where an export keeps its own files, beside the dataset in OUT (a folder or a store prefix):
//! `_export/` (the job's state, the event log, the server's outcome and deleted files, and the
//! downloads until the export is published) and `_deleted/`.
//!
//! Each download is copied here, gzipped, while it streams into the conversion ([`Tee`]); it is
//! named under its final name only once the server's body has ended, and the state records it.
//! `export --resume` then reads finished downloads from here and fetches only the others.

use std::io::{self, Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::store::{block_on, Location, MultipartSink, Remote, StreamReader};

/// OUT's `_export/` (or, for downloads, the `--keep-ndjson` folder).
#[derive(Clone)]
pub enum ExportDir {
    Local(PathBuf),
    Remote(Remote, String),
}

impl ExportDir {
    /// `OUT/<sub>`.
    pub fn under(out: &Location, sub: &str) -> ExportDir {
        match out {
            Location::Local(p) => ExportDir::Local(p.join(sub)),
            Location::Remote(r) => ExportDir::Remote(r.clone(), sub.to_string()),
        }
    }

    fn rel(prefix: &str, name: &str) -> String {
        format!("{prefix}/{name}")
    }

    /// Where `name` is, as the user knows it.
    pub fn display(&self, name: &str) -> String {
        match self {
            ExportDir::Local(d) => d.join(name).display().to_string(),
            ExportDir::Remote(r, p) => r.url(&Self::rel(p, name)),
        }
    }

    pub fn write(&self, name: &str, data: &[u8]) -> Result<()> {
        match self {
            ExportDir::Local(d) => {
                fs_err::create_dir_all(d)
                    .with_context(|| format!("cannot create {}", d.display()))?;
                // Written beside, then renamed: a state file is never half written.
                let tmp = d.join(format!(".{name}.tmp"));
                fs_err::write(&tmp, data)
                    .and_then(|()| fs_err::rename(&tmp, d.join(name)))
                    .with_context(|| format!("cannot write {}", self.display(name)))
            }
            ExportDir::Remote(r, p) => r.put(&Self::rel(p, name), data.to_vec()),
        }
    }

    /// `name` read whole, or `None` when it does not exist.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>> {
        match self {
            ExportDir::Local(d) => match fs_err::read(d.join(name)) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e).with_context(|| format!("cannot read {}", self.display(name))),
            },
            ExportDir::Remote(r, p) => Ok(r.read(&Self::rel(p, name))?.map(|b| b.to_vec())),
        }
    }

    pub fn exists(&self, name: &str) -> bool {
        match self {
            ExportDir::Local(d) => d.join(name).is_file(),
            ExportDir::Remote(r, p) => {
                use object_store::ObjectStoreExt;
                let path = r.path(&Self::rel(p, name));
                block_on(r.store.head(&path)).is_ok()
            }
        }
    }

    pub fn remove(&self, name: &str) {
        match self {
            ExportDir::Local(d) => {
                let _ = fs_err::remove_file(d.join(name));
            }
            ExportDir::Remote(r, p) => {
                let _ = r.delete(vec![r.path(&Self::rel(p, name))]);
            }
        }
    }

    /// Removes the folder and what is in it.
    pub fn remove_all(&self) {
        match self {
            ExportDir::Local(d) => {
                let _ = fs_err::remove_dir_all(d);
            }
            ExportDir::Remote(r, p) => {
                if let Ok(all) = r.list(p) {
                    let _ = r.delete(all.into_iter().map(|o| o.location).collect());
                }
            }
        }
    }

    /// Opens a finished download (gzipped NDJSON), decompressed.
    pub fn open(&self, name: &str) -> io::Result<Box<dyn Read + Send>> {
        let raw: Box<dyn Read + Send> = match self {
            ExportDir::Local(d) => Box::new(std::fs::File::open(d.join(name))?),
            ExportDir::Remote(r, p) => Box::new(
                StreamReader::object(r, &r.path(&Self::rel(p, name)))
                    .map_err(|e| io::Error::other(format!("{e:#}")))?,
            ),
        };
        Ok(Box::new(flate2::read::MultiGzDecoder::new(raw)))
    }

    /// Starts a download's copy, named `name` once [`Spool::finish`]ed.
    pub fn spool(&self, name: &str) -> Result<Spool> {
        let sink = match self {
            ExportDir::Local(d) => {
                fs_err::create_dir_all(d)
                    .with_context(|| format!("cannot create {}", d.display()))?;
                let part = d.join(format!(".{name}.part"));
                let f = std::fs::File::create(&part)
                    .with_context(|| format!("cannot create {}", part.display()))?;
                SpoolSink::File(io::BufWriter::new(f), part, d.join(name))
            }
            ExportDir::Remote(r, p) => {
                SpoolSink::Store(MultipartSink::create(r, r.path(&Self::rel(p, name)))?)
            }
        };
        Ok(Spool {
            sink: Box::new(sink),
        })
    }
}

enum SpoolSink {
    File(io::BufWriter<std::fs::File>, PathBuf, PathBuf),
    /// A multipart upload: the object exists only once completed.
    Store(MultipartSink),
}

/// A download's copy being written.
pub struct Spool {
    sink: Box<SpoolSink>,
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.sink.as_mut() {
            SpoolSink::File(f, _, _) => f.write(buf),
            SpoolSink::Store(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.sink.as_mut() {
            SpoolSink::File(f, _, _) => f.flush(),
            SpoolSink::Store(s) => s.flush(),
        }
    }
}

impl Spool {
    /// Makes the copy visible under its name.
    pub fn finish(self) -> Result<()> {
        match *self.sink {
            SpoolSink::File(f, part, name) => {
                let f = f.into_inner().map_err(|e| e.into_error())?;
                f.sync_all()?;
                fs_err::rename(&part, &name)
                    .with_context(|| format!("cannot write {}", name.display()))
            }
            SpoolSink::Store(s) => {
                let pending = s.finish()?;
                block_on(pending.complete()).context("cannot complete a download's copy")
            }
        }
    }
}

/// Copies the bytes read from a download, as they arrive, into its [`Spool`] (gzipped there
/// when the server sent them plain); at the end of the body the copy is finished and `done`
/// is called, so a resumed export need not fetch it again.
pub struct Tee<R> {
    inner: R,
    out: Option<TeeOut>,
    done: Option<Done>,
    /// Bytes read, as sent; lines (when sent plain).
    bytes: u64,
    lines: Option<u64>,
}

/// Called at the end of a download with its size as sent and its lines (when sent plain).
pub type Done = Box<dyn FnOnce(u64, Option<u64>) + Send>;

enum TeeOut {
    /// The server sent gzip: copied as it is.
    Raw(Spool),
    Gzip(Box<flate2::write::GzEncoder<Spool>>),
}

impl<R: Read> Tee<R> {
    /// `gzip`: the bytes read are gzip already.
    pub fn new(inner: R, spool: Spool, gzip: bool, done: Done) -> Self {
        let out = match gzip {
            true => TeeOut::Raw(spool),
            false => TeeOut::Gzip(Box::new(flate2::write::GzEncoder::new(
                spool,
                flate2::Compression::fast(),
            ))),
        };
        Tee {
            inner,
            out: Some(out),
            done: Some(done),
            bytes: 0,
            lines: (!gzip).then_some(0),
        }
    }

    fn end(&mut self) -> io::Result<()> {
        let spool = match self.out.take() {
            Some(TeeOut::Raw(s)) => s,
            Some(TeeOut::Gzip(g)) => g.finish()?,
            None => return Ok(()),
        };
        spool
            .finish()
            .map_err(|e| io::Error::other(format!("{e:#}")))?;
        if let Some(done) = self.done.take() {
            done(self.bytes, self.lines);
        }
        Ok(())
    }
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if crate::interrupt::requested() {
            return Err(io::Error::other(crate::interrupt::MESSAGE));
        }
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        if let Some(lines) = &mut self.lines {
            *lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
        }
        match (&mut self.out, n) {
            (Some(_), 0) if !buf.is_empty() => self.end()?,
            (Some(TeeOut::Raw(s)), _) => s.write_all(&buf[..n])?,
            (Some(TeeOut::Gzip(g)), _) => g.write_all(&buf[..n])?,
            (None, _) => {}
        }
        Ok(n)
    }
}
