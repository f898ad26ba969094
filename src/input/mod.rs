//! Where the NDJSON comes from: files (plain or gzip), folders, bulk export manifests, stdin, and
//! the same on object stores.
//!
//! [`resolve`] turns what the user named into a list of [`Source`]s; [`chunks`] reads one source
//! into chunks of whole lines, which is all the rest of the pipeline sees.

mod chunks;
pub(crate) mod manifest;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use object_store::path::Path as ObjPath;
use object_store::ObjectStoreExt;

use crate::store::{block_on, Location, Remote};

pub use chunks::{read_chunks, Chunk, ReadOutcome};

/// Opens a stream of NDJSON (plain, or gzip if the source says so).
#[derive(Clone)]
pub struct Opener(
    pub std::sync::Arc<dyn Fn() -> std::io::Result<Box<dyn std::io::Read>> + Send + Sync>,
);

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Opener")
    }
}

/// One input stream.
#[derive(Debug, Clone)]
pub struct Source {
    /// `-` for standard input.
    pub path: PathBuf,
    /// An object of a store (then `path` is unused).
    pub object: Option<(Remote, ObjPath)>,
    /// Any other stream (a download), opened when it is read; `path` is then its name.
    pub opener: Option<Opener>,
    pub gzip: bool,
    /// The number of resources a bulk manifest says the file holds.
    pub expected_count: Option<u64>,
    /// Size on disk (0 for stdin).
    pub size: u64,
}

impl Source {
    pub fn display(&self) -> String {
        match &self.object {
            Some((remote, path)) => remote.object_url(path),
            None => self.path.display().to_string(),
        }
    }

    /// A stream from elsewhere (a download), named `name`, opened by `open` when it is read.
    pub fn stream(name: &str, gzip: bool, expected_count: Option<u64>, open: Opener) -> Source {
        Source {
            path: PathBuf::from(name),
            object: None,
            opener: Some(open),
            gzip,
            expected_count,
            size: 0,
        }
    }

    pub fn is_stdin(&self) -> bool {
        self.path.as_os_str() == "-"
    }
}

fn is_ndjson(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    [".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz"]
        .iter()
        .any(|s| name.ends_with(s))
}

fn file_source(path: PathBuf, expected_count: Option<u64>) -> Result<Source> {
    let meta = fs_err::metadata(&path)
        .with_context(|| format!("cannot read input {}: check the path", path.display()))?;
    let gzip = path.extension().is_some_and(|e| e == "gz");
    Ok(Source {
        path,
        object: None,
        opener: None,
        gzip,
        expected_count,
        size: meta.len(),
    })
}

fn object_source(remote: &Remote, path: ObjPath, size: u64, expected_count: Option<u64>) -> Source {
    Source {
        path: PathBuf::new(),
        gzip: path.as_ref().ends_with(".gz"),
        object: Some((remote.clone(), path)),
        opener: None,
        expected_count,
        size,
    }
}

fn is_ndjson_name(name: &str) -> bool {
    is_ndjson(Path::new(name))
}

/// An object, a manifest or a prefix of NDJSON objects on a store.
fn resolve_remote(remote: &Remote) -> Result<Vec<Source>> {
    let name = remote.prefix.filename().unwrap_or_default().to_string();
    if name.ends_with(".json") {
        return manifest::remote_sources(remote, remote.prefix.clone());
    }
    if is_ndjson_name(&name) {
        let meta = block_on(remote.store.head(&remote.prefix))
            .map_err(|e| remote.explain(e, &remote.prefix))?;
        return Ok(vec![object_source(remote, meta.location, meta.size, None)]);
    }
    let mut objects = remote.list("")?;
    let manifest = remote.path("manifest.json");
    if objects.iter().any(|o| o.location == manifest) {
        return manifest::remote_sources(remote, manifest);
    }
    objects.retain(|o| is_ndjson_name(o.location.filename().unwrap_or_default()));
    objects.sort_by(|a, b| a.location.cmp(&b.location));
    if objects.is_empty() {
        bail!("{} holds no .ndjson or .ndjson.gz object", remote.url(""));
    }
    Ok(objects
        .into_iter()
        .map(|o| object_source(remote, o.location, o.size, None))
        .collect())
}

/// Resolves the inputs named on the command line.
pub fn resolve(inputs: &[Location]) -> Result<Vec<Source>> {
    let mut out = Vec::new();
    for input in inputs {
        let input = match input {
            Location::Remote(remote) => {
                out.extend(resolve_remote(remote)?);
                continue;
            }
            Location::Local(path) => path,
        };
        if input.as_os_str() == "-" {
            out.push(Source {
                path: input.clone(),
                object: None,
                opener: None,
                gzip: false,
                expected_count: None,
                size: 0,
            });
        } else if input.is_dir() {
            let manifest = input.join("manifest.json");
            if manifest.is_file() {
                out.extend(manifest::sources(&manifest)?);
                continue;
            }
            let mut files = Vec::new();
            walk(input, &mut files)?;
            files.sort();
            if files.is_empty() {
                bail!("{} holds no .ndjson or .ndjson.gz file", input.display());
            }
            for f in files {
                out.push(file_source(f, None)?);
            }
        } else if input
            .file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with(".json"))
        {
            out.extend(manifest::sources(input)?);
        } else {
            out.push(file_source(input.clone(), None)?);
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in
        fs_err::read_dir(dir).with_context(|| format!("cannot read folder {}", dir.display()))?
    {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if is_ndjson(&path) {
            out.push(path);
        }
    }
    Ok(())
}
