//! A file written straight into an object store, invisible until the run commits it.
//!
//! [`MultipartSink`] is a `std::io::Write` (what the Parquet writer takes): its bytes go out as
//! the parts of one multipart upload, a few uploading at a time on the store runtime while the
//! caller goes on writing. [`MultipartSink::finish`] waits for the parts but does not complete
//! the upload: it hands back a [`PendingUpload`], completed (made visible) or aborted by the run
//! as a whole. This is the S3A "magic committer" idea: until completion the object does not
//! exist for any reader, and an upload that is never completed is dropped by the store's
//! lifecycle rules (S3, GCS) or its garbage collection of uncommitted blocks (Azure, 7 days).

use std::io::{self, Write};

use object_store::path::Path as ObjPath;
use object_store::{MultipartUpload, ObjectStoreExt, PutPayload};
use tokio::task::JoinHandle;

use super::{block_on, runtime, Remote};

/// Bytes per part: S3 takes parts of at least 5 MiB (but the last) and at most 10,000 of them.
pub const PART_BYTES: usize = 8 << 20;
/// Parts of one file in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

pub struct MultipartSink {
    remote: Remote,
    path: ObjPath,
    upload: Box<dyn MultipartUpload>,
    buf: Vec<u8>,
    in_flight: Vec<JoinHandle<object_store::Result<()>>>,
    bytes: u64,
}

/// A file whose parts are all uploaded, waiting for the run to commit or abort it.
pub struct PendingUpload {
    pub path: ObjPath,
    pub bytes: u64,
    upload: Box<dyn MultipartUpload>,
}

impl std::fmt::Debug for PendingUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PendingUpload({})", self.path)
    }
}

fn io_error(e: anyhow::Error) -> io::Error {
    io::Error::other(format!("{e:#}"))
}

impl MultipartSink {
    /// Starts a multipart upload of `path`.
    pub fn create(remote: &Remote, path: ObjPath) -> anyhow::Result<Self> {
        let upload =
            block_on(remote.store.put_multipart(&path)).map_err(|e| remote.explain(e, &path))?;
        Ok(MultipartSink {
            remote: remote.clone(),
            path,
            upload,
            buf: Vec::new(),
            in_flight: Vec::new(),
            bytes: 0,
        })
    }

    fn send_part(&mut self) -> io::Result<()> {
        let data = std::mem::take(&mut self.buf);
        let part = self.upload.put_part(PutPayload::from(data));
        self.in_flight.push(runtime().spawn(part));
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            let first = self.in_flight.remove(0);
            self.wait(first)?;
        }
        Ok(())
    }

    fn wait(&self, part: JoinHandle<object_store::Result<()>>) -> io::Result<()> {
        match block_on(part) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io_error(self.remote.explain(e, &self.path))),
            Err(e) => Err(io::Error::other(e)),
        }
    }

    /// Uploads what is left and waits for every part; the upload stays pending.
    pub fn finish(mut self) -> anyhow::Result<PendingUpload> {
        if !self.buf.is_empty() || self.bytes == 0 {
            self.send_part()?;
        }
        for part in std::mem::take(&mut self.in_flight) {
            self.wait(part)?;
        }
        Ok(PendingUpload {
            path: self.path,
            bytes: self.bytes,
            upload: self.upload,
        })
    }

    /// Gives up the upload (its parts are dropped by the store).
    pub fn abort(mut self) {
        for part in std::mem::take(&mut self.in_flight) {
            part.abort();
        }
        let _ = block_on(self.upload.abort());
    }
}

impl Write for MultipartSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = PART_BYTES - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        self.bytes += n as u64;
        if self.buf.len() == PART_BYTES {
            self.send_part()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Parts are whole `PART_BYTES`; the rest goes with `finish`.
        Ok(())
    }
}

impl PendingUpload {
    /// Makes the object visible.
    pub async fn complete(mut self) -> object_store::Result<()> {
        self.upload.complete().await.map(|_| ())
    }

    /// Drops the parts uploaded.
    pub async fn abort(mut self) {
        let _ = self.upload.abort().await;
    }
}
