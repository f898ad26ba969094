//! Where files go: a local folder or an object store (multipart uploads completed at the commit).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::store::{MultipartSink, Remote};

/// Where a run's files go: a local (temporary) folder, or a prefix of an object store, where
/// each file is a multipart upload that the run completes only when it commits.
pub enum Target {
    Dir(PathBuf),
    Store(Remote),
}

/// A file being written.
pub(super) enum Sink {
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
    pub(super) fn display(&self, rel: &Path) -> String {
        match self {
            Target::Dir(root) => root.join(rel).display().to_string(),
            Target::Store(remote) => remote.url(&rel.to_string_lossy().replace('\\', "/")),
        }
    }

    /// Opens `dir/name` (`dir` relative to the target).
    pub(super) fn create(&self, dir: &Path, name: &str) -> Result<Sink> {
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
