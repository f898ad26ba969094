//! FHIR Bulk Data export manifests (`manifest.json` with `output[]`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::{file_source, Source};

#[derive(Deserialize)]
struct Manifest {
    output: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    url: String,
    count: Option<u64>,
}

/// The files a manifest lists: a relative path is taken from the manifest's folder, a URL by the
/// file of the same name beside the manifest.
pub(super) fn sources(manifest: &Path) -> Result<Vec<Source>> {
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("cannot read manifest {}", manifest.display()))?;
    let m: Manifest = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a bulk export manifest (no output[] with url)",
            manifest.display()
        )
    })?;
    let dir = manifest.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for e in m.output {
        let path = if e.url.contains("://") {
            let name = e.url.rsplit('/').next().unwrap_or_default();
            let name = name.split(['?', '#']).next().unwrap_or_default();
            dir.join(name)
        } else {
            dir.join(PathBuf::from(&e.url))
        };
        if !path.is_file() {
            bail!(
                "manifest {} lists {}, expected at {}: download it there or pass the files directly",
                manifest.display(),
                e.url,
                path.display()
            );
        }
        out.push(file_source(path, e.count)?);
    }
    Ok(out)
}
