//! FHIR Bulk Data export manifests (`manifest.json` with `output[]`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use object_store::path::Path as ObjPath;
use object_store::ObjectStoreExt;

use super::{file_source, object_source, Source};
use crate::store::{block_on, Remote};

#[derive(Deserialize)]
struct Manifest {
    output: Vec<Entry>,
    /// Bundles of the resources deleted since `_since` (Bulk Data 2.0).
    #[serde(default)]
    deleted: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    url: String,
    count: Option<u64>,
}

fn parse(text: &str, name: &str) -> Result<Manifest> {
    serde_json::from_str(text)
        .with_context(|| format!("{name} is not a bulk export manifest (no output[] with url)"))
}

/// What a manifest entry's `url` names beside the manifest: a relative path as it is, a URL by
/// its file name.
fn beside(url: &str) -> &str {
    if url.contains("://") {
        let name = url.rsplit('/').next().unwrap_or_default();
        name.split(['?', '#']).next().unwrap_or_default()
    } else {
        url
    }
}

/// The objects a manifest on a store lists, found beside it as for a local manifest.
pub(super) fn remote_sources(remote: &Remote, manifest: ObjPath) -> Result<Vec<Source>> {
    let url = remote.object_url(&manifest);
    let bytes = block_on(async { remote.store.get(&manifest).await?.bytes().await })
        .map_err(|e| remote.explain(e, &manifest))?;
    let m = parse(&String::from_utf8_lossy(&bytes), &url)?;
    let dir: Vec<_> = manifest.parts().collect();
    let dir = ObjPath::from_iter(dir[..dir.len().saturating_sub(1)].iter().cloned());
    let mut out = Vec::new();
    for e in m.output {
        let path = beside(&e.url)
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .fold(dir.clone(), |p, part| p.clone().join(part));
        let meta = match block_on(remote.store.head(&path)) {
            Ok(meta) => meta,
            Err(object_store::Error::NotFound { .. }) => bail!(
                "manifest {url} lists {}, expected at {}: copy it there or pass the objects \
                 directly",
                crate::store::redact(&e.url),
                remote.object_url(&path)
            ),
            Err(err) => return Err(remote.explain(err, &path)),
        };
        out.push(object_source(remote, path, meta.size, e.count));
    }
    Ok(out)
}

/// The files a manifest lists: a relative path is taken from the manifest's folder, a URL by the
/// file of the same name beside the manifest.
pub(super) fn sources(manifest: &Path) -> Result<Vec<Source>> {
    let text = fs_err::read_to_string(manifest)
        .with_context(|| format!("cannot read manifest {}", manifest.display()))?;
    let m = parse(&text, &manifest.display().to_string())?;
    let dir = manifest.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for e in m.output {
        let path = dir.join(PathBuf::from(beside(&e.url)));
        if !path.is_file() {
            bail!(
                "manifest {} lists {}, expected at {}: download it there or pass the files directly",
                manifest.display(),
                crate::store::redact(&e.url),
                path.display()
            );
        }
        out.push(file_source(path, e.count)?);
    }
    Ok(out)
}

/// The files of a local manifest's `deleted` section, found beside it as its `output` files.
pub(crate) fn deleted_files(manifest: &Path) -> Result<Vec<PathBuf>> {
    let text = fs_err::read_to_string(manifest)
        .with_context(|| format!("cannot read manifest {}", manifest.display()))?;
    let m = parse(&text, &manifest.display().to_string())?;
    let dir = manifest.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for e in m.deleted {
        let path = dir.join(PathBuf::from(beside(&e.url)));
        if !path.is_file() {
            bail!(
                "manifest {} lists the deleted file {}, expected at {}: download it there",
                manifest.display(),
                crate::store::redact(&e.url),
                path.display()
            );
        }
        out.push(path);
    }
    Ok(out)
}
