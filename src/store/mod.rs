//! Where datasets and inputs live: a local folder, or a prefix of an object store (Amazon S3 and
//! S3-compatible stores, Google Cloud Storage, Azure Blob Storage), through the `object_store`
//! crate and its standard credential chains.
//!
//! [`Location::parse`] turns what the user typed into one or the other; everything that reads or
//! writes a store goes through a [`Remote`]: the store, the URL it is registered under (for
//! DataFusion) and the prefix inside it.
//!
//! ```
//! use fhir2parquet::store::{Location, StoreOptions};
//!
//! let opts = StoreOptions::default();
//! assert!(matches!(Location::parse("out", &opts).unwrap(), Location::Local(_)));
//! assert!(matches!(Location::parse("file:///tmp/out", &opts).unwrap(), Location::Local(_)));
//! let err = Location::parse("ftp://host/out", &opts).unwrap_err();
//! assert!(err.to_string().contains("ftp://"));
//! ```

mod credentials;
mod multipart;
pub mod offset;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use anyhow::{anyhow, bail, Context, Result};
use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use url::Url;

pub use multipart::{MultipartSink, PendingUpload, PART_BYTES};

/// Settings of the stores, from the command line (the rest comes from the environment).
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// A custom endpoint: an S3-compatible store, an emulator. `http://` is allowed here.
    pub endpoint: Option<String>,
    /// Retries of a failed request (throttling, 5xx, dropped connections), with exponential
    /// backoff; `object_store`'s default (10) when unset.
    pub retries: Option<usize>,
}

/// A dataset's or an input's place.
#[derive(Debug, Clone)]
pub enum Location {
    Local(PathBuf),
    Remote(Remote),
}

/// A prefix in an object store.
#[derive(Clone)]
pub struct Remote {
    pub store: Arc<dyn ObjectStore>,
    /// `scheme://bucket`: what the store is registered under in DataFusion.
    pub base: Url,
    /// The prefix inside the bucket (no leading or trailing `/`; empty for the whole bucket).
    pub prefix: ObjPath,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url(""))
    }
}

impl From<PathBuf> for Location {
    fn from(p: PathBuf) -> Self {
        Location::Local(p)
    }
}

impl From<&PathBuf> for Location {
    fn from(p: &PathBuf) -> Self {
        Location::Local(p.clone())
    }
}

impl From<&std::path::Path> for Location {
    fn from(p: &std::path::Path) -> Self {
        Location::Local(p.to_path_buf())
    }
}

impl Location {
    /// A local path, `file://` URL, or `s3://` (`s3a://`), `gs://`, `az://` (`abfs://`,
    /// `abfss://`, `azure://`) URL. Any other scheme is an error, never a local folder named
    /// `s3:`.
    pub fn parse(s: &str, opts: &StoreOptions) -> Result<Location> {
        let Some((scheme, _)) = s.split_once("://") else {
            return Ok(Location::Local(PathBuf::from(s)));
        };
        let url = Url::parse(s).with_context(|| format!("{s} is not a valid URL"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme == "file" {
            let path = url
                .to_file_path()
                .map_err(|_| anyhow!("{s} is not a local file URL"))?;
            return Ok(Location::Local(path));
        }
        let store = match scheme.as_str() {
            "s3" | "s3a" => credentials::s3(&url, opts)?,
            "gs" => credentials::gcs(&url, opts)?,
            "az" | "abfs" | "abfss" | "azure" | "adl" => credentials::azure(&url, opts)?,
            _ => bail!(
                "{scheme}:// is not a storage this tool handles: give a local path, or an s3://, \
                 gs://, az:// (abfss://) or file:// URL"
            ),
        };
        let host = url.host_str().unwrap_or_default();
        let user = url.username();
        let authority = match user.is_empty() {
            true => host.to_string(),
            false => format!("{user}@{host}"),
        };
        let base = Url::parse(&format!("{scheme}://{authority}"))?;
        let prefix = ObjPath::from_url_path(url.path())
            .with_context(|| format!("{} is not a valid object path", url.path()))?;
        Ok(Location::Remote(Remote {
            store,
            base,
            prefix,
        }))
    }

    /// As the user would write it (never with credentials: URLs carry none).
    pub fn display(&self) -> String {
        match self {
            Location::Local(p) => p.display().to_string(),
            Location::Remote(r) => r.url(""),
        }
    }

    /// The file or object `rel` (`/`-separated, under the location) read whole.
    pub fn read_file(&self, rel: &str) -> Result<Vec<u8>> {
        match self {
            Location::Local(dir) => {
                let mut p = dir.clone();
                p.extend(rel.split('/'));
                Ok(fs_err::read(&p)?)
            }
            Location::Remote(r) => Ok(r
                .read(rel)?
                .with_context(|| format!("{} is missing", r.url(rel)))?
                .to_vec()),
        }
    }

    /// Writes the file or object `rel` (`/`-separated, under the location) whole.
    pub fn write_file(&self, rel: &str, data: Vec<u8>) -> Result<()> {
        match self {
            Location::Local(dir) => {
                let mut p = dir.clone();
                p.extend(rel.split('/'));
                Ok(fs_err::write(&p, data)?)
            }
            Location::Remote(r) => r.put(rel, data),
        }
    }
}

impl Remote {
    /// The object path of `rel` (`/`-separated) under the prefix.
    pub fn path(&self, rel: &str) -> ObjPath {
        rel.split('/')
            .filter(|p| !p.is_empty())
            .fold(self.prefix.clone(), |p, part| p.clone().join(part))
    }

    /// The URL of `rel` under the prefix (a trailing `/` kept, as DataFusion wants for folders).
    pub fn url(&self, rel: &str) -> String {
        let mut s = format!("{}{}", self.base.as_str().trim_end_matches('/'), "/");
        if !self.prefix.as_ref().is_empty() {
            s.push_str(self.prefix.as_ref());
            s.push('/');
        }
        s.push_str(rel.trim_start_matches('/'));
        s
    }

    /// The URL of an object path of this store.
    pub fn object_url(&self, path: &ObjPath) -> String {
        format!("{}/{}", self.base.as_str().trim_end_matches('/'), path)
    }

    /// `rel` read whole, or `None` when there is no such object.
    pub fn read(&self, rel: &str) -> Result<Option<bytes::Bytes>> {
        let path = self.path(rel);
        block_on(async {
            match self.store.get(&path).await {
                Ok(r) => Ok(Some(r.bytes().await?)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .map_err(|e| self.explain(e, &path))
    }

    /// Writes `rel` in one request (small objects: run records, rejects).
    pub fn put(&self, rel: &str, data: Vec<u8>) -> Result<()> {
        let path = self.path(rel);
        block_on(self.store.put(&path, PutPayload::from(data)))
            .map(|_| ())
            .map_err(|e| self.explain(e, &path))
    }

    /// Every object under `rel`, with its size.
    pub fn list(&self, rel: &str) -> Result<Vec<object_store::ObjectMeta>> {
        let path = self.path(rel);
        block_on(self.store.list(Some(&path)).try_collect::<Vec<_>>())
            .map_err(|e| self.explain(e, &path))
    }

    /// Deletes objects (those already gone are fine).
    pub fn delete(&self, paths: Vec<ObjPath>) -> Result<()> {
        let store = self.store.clone();
        block_on(async move {
            futures::stream::iter(paths)
                .map(|p| {
                    let store = store.clone();
                    async move {
                        match store.delete(&p).await {
                            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                            Err(e) => Err((e, p)),
                        }
                    }
                })
                .buffer_unordered(16)
                .try_collect::<Vec<_>>()
                .await
        })
        .map(|_| ())
        .map_err(|(e, p)| self.explain(e, &p))
    }

    /// An error of the store, with the object's URL and what the user can do about it.
    pub fn explain(&self, e: object_store::Error, path: &ObjPath) -> anyhow::Error {
        let url = self.object_url(path);
        let what = match &e {
            _ if looks_like_missing_bucket(&e) => {
                "no such bucket (container): create it, or check the name".to_string()
            }
            object_store::Error::Unauthenticated { .. } => {
                format!(
                    "no usable credentials: {}",
                    credentials::hint(self.base.scheme())
                )
            }
            _ if looks_like_credentials(&e) => {
                format!(
                    "no usable credentials: {}",
                    credentials::hint(self.base.scheme())
                )
            }
            object_store::Error::PermissionDenied { .. } => {
                "permission denied: the credentials in use may not do this; check the bucket's \
                 policy, the role or the SAS token's permissions"
                    .to_string()
            }
            object_store::Error::NotFound { .. } => "not found: check the path".to_string(),
            _ => String::new(),
        };
        let e = anyhow::Error::new(e);
        match what.is_empty() {
            true => e.context(url),
            false => e.context(format!("{url}: {what}")),
        }
    }
}

use futures::StreamExt;

fn looks_like_missing_bucket(e: &object_store::Error) -> bool {
    let s = e.to_string();
    s.contains("NoSuchBucket") || s.contains("ContainerNotFound") || s.contains("bucket does not")
}

fn looks_like_credentials(e: &object_store::Error) -> bool {
    let s = e.to_string();
    [
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AuthenticationFailed",
        "AuthorizationFailure",
        "credential",
        // Instance metadata, the last link of the AWS and GCP chains, is not reachable.
        "169.254.169.254",
        "token request",
    ]
    .iter()
    .any(|k| s.contains(k))
}

/// A stream of bytes (an object, a download) read by synchronous readers (the NDJSON inputs):
/// each chunk is awaited on the store runtime.
pub struct StreamReader {
    stream: futures::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>,
    current: bytes::Bytes,
}

impl StreamReader {
    pub fn new(stream: futures::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>) -> Self {
        StreamReader {
            stream,
            current: bytes::Bytes::new(),
        }
    }

    /// An object of a store.
    pub fn object(remote: &Remote, path: &ObjPath) -> std::io::Result<Self> {
        let stream = block_on(remote.store.get(path))
            .map_err(|e| std::io::Error::other(format!("{:#}", remote.explain(e, path))))?
            .into_stream()
            .map(|r| r.map_err(std::io::Error::other));
        Ok(StreamReader::new(stream.boxed()))
    }
}

impl std::io::Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// A Parquet file on a store, for the synchronous Parquet reader: byte ranges are fetched in
/// windows of at least [`READ_WINDOW`], so that reading a row group's columns one by one is a
/// few requests, not one per column.
pub struct RemoteFile {
    remote: Remote,
    path: ObjPath,
    size: u64,
    window: std::sync::Mutex<(u64, bytes::Bytes)>,
}

/// Bytes fetched at once by [`RemoteFile`].
pub const READ_WINDOW: u64 = 16 << 20;

impl RemoteFile {
    pub fn new(remote: &Remote, path: ObjPath, size: u64) -> Self {
        RemoteFile {
            remote: remote.clone(),
            path,
            size,
            window: std::sync::Mutex::new((0, bytes::Bytes::new())),
        }
    }
}

impl parquet::file::reader::Length for RemoteFile {
    fn len(&self) -> u64 {
        self.size
    }
}

impl parquet::file::reader::ChunkReader for RemoteFile {
    type T = bytes::buf::Reader<bytes::Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        use bytes::Buf;
        let len = (self.size - start.min(self.size)) as usize;
        Ok(self.get_bytes(start, len)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        let end = start + length as u64;
        let mut w = self.window.lock().expect("no reader panicked");
        let (at, data) = &*w;
        if start >= *at && end <= at + data.len() as u64 {
            return Ok(data.slice((start - at) as usize..(end - at) as usize));
        }
        let fetch_end = end.max(start + READ_WINDOW).min(self.size);
        let data =
            block_on(self.remote.store.get_range(&self.path, start..fetch_end)).map_err(|e| {
                let e = self.remote.explain(e, &self.path);
                parquet::errors::ParquetError::External(format!("{e:#}").into())
            })?;
        let out = data.slice(0..length.min(data.len()));
        *w = (start, data);
        Ok(out)
    }
}

/// The runtime every store request of the synchronous commands runs on.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("store-io")
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// Runs a store request to its end from synchronous code (a worker thread, the main thread),
/// from inside any tokio runtime or none.
pub fn block_on<F>(f: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        // Inside a multi-threaded runtime (the SQL shell): let it run other tasks meanwhile.
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| h.block_on(f))
        }
        // Inside a current-thread runtime (a library user's `#[tokio::test]`), which cannot
        // block in place: the request runs on the store runtime from a thread of its own.
        Ok(_) => std::thread::scope(|s| {
            s.spawn(|| runtime().block_on(f))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        }),
        Err(_) => runtime().block_on(f),
    }
}

/// Removes user names, passwords and query strings (signatures, SAS tokens) from URLs in a
/// message, so that no credential reaches the terminal or a log.
pub fn redact(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>' | ','))
            .unwrap_or(tail.len());
        let (url, after) = tail.split_at(end);
        let url = url.split(['?', '#']).next().unwrap_or_default();
        match url
            .split_once('/')
            .map(|(a, _)| a)
            .unwrap_or(url)
            .rfind('@')
        {
            Some(at) => out.push_str(&url[at + 1..]),
            None => out.push_str(url),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_removes_signatures_and_user_info() {
        let m = "error sending request for url (https://acct.blob.core.windows.net/c/x?sv=1&sig=SECRET): boom";
        assert_eq!(
            redact(m),
            "error sending request for url (https://acct.blob.core.windows.net/c/x): boom"
        );
        assert_eq!(
            redact("s3://key:secret@bucket/p and more"),
            "s3://bucket/p and more"
        );
        assert_eq!(redact("no url here"), "no url here");
    }

    #[test]
    fn paths_and_urls() {
        let opts = StoreOptions {
            endpoint: Some("http://127.0.0.1:1".into()),
            retries: None,
        };
        let Location::Remote(r) = Location::parse("s3://bucket/a/b/", &opts).unwrap() else {
            panic!("a remote location")
        };
        assert_eq!(r.prefix.as_ref(), "a/b");
        assert_eq!(
            r.path("Patient/x.parquet").as_ref(),
            "a/b/Patient/x.parquet"
        );
        assert_eq!(r.url("Patient/"), "s3://bucket/a/b/Patient/");
        assert_eq!(r.url(""), "s3://bucket/a/b/");
        let Location::Remote(r) = Location::parse("s3://bucket", &opts).unwrap() else {
            panic!("a remote location")
        };
        assert_eq!(r.url("Patient/"), "s3://bucket/Patient/");
        assert!(Location::parse("gopher://x/y", &opts).is_err());
    }
}

#[cfg(test)]
mod block_on_tests {
    /// From no runtime, a multi-threaded one and a current-thread one (where `block_in_place`
    /// would panic), the future runs to its end.
    #[test]
    fn block_on_works_from_any_runtime() {
        assert_eq!(super::block_on(async { 1 }), 1);
        let multi = tokio::runtime::Builder::new_multi_thread().build().unwrap();
        assert_eq!(multi.block_on(async { super::block_on(async { 2 }) }), 2);
        let current = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(current.block_on(async { super::block_on(async { 3 }) }), 3);
    }
}
