//! Lines that are not resources: kept in `OUT/_rejects/` with where they came from and why.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::Result;
use base64::Engine as _;
use serde::Serialize;

/// Why a line was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RejectReason {
    NotUtf8,
    NotJson,
    NotAnObject,
    NoResourceType,
    UnknownResourceType,
}

impl RejectReason {
    pub fn describe(self) -> &'static str {
        match self {
            RejectReason::NotUtf8 => "the line is not UTF-8",
            RejectReason::NotJson => "the line is not JSON",
            RejectReason::NotAnObject => "the line is JSON but not an object",
            RejectReason::NoResourceType => "the object has no string resourceType",
            RejectReason::UnknownResourceType => {
                "the resourceType is not a resource type of the run's FHIR version"
            }
        }
    }
}

#[derive(Serialize)]
struct Record<'a> {
    file: &'a str,
    line: u64,
    reason: RejectReason,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    base64: Option<String>,
}

/// One worker's rejects file, created on the first reject.
pub struct RejectWriter {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    pub count: u64,
}

impl RejectWriter {
    pub fn new(path: PathBuf) -> Self {
        RejectWriter {
            path,
            out: None,
            count: 0,
        }
    }

    pub fn reject(
        &mut self,
        file: &str,
        line: u64,
        reason: RejectReason,
        detail: &str,
        raw: &[u8],
    ) -> Result<()> {
        if self.out.is_none() {
            if let Some(dir) = self.path.parent() {
                fs_err::create_dir_all(dir)?;
            }
            self.out = Some(BufWriter::new(File::create(&self.path)?));
        }
        let (text, base64) = match std::str::from_utf8(raw) {
            Ok(t) => (Some(t), None),
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(raw)),
            ),
        };
        let rec = Record {
            file,
            line,
            reason,
            detail,
            text,
            base64,
        };
        let out = self.out.as_mut().expect("opened above");
        serde_json::to_writer(&mut *out, &rec)?;
        out.write_all(b"\n")?;
        self.count += 1;
        Ok(())
    }

    pub fn finish(self) -> Result<Option<PathBuf>> {
        match self.out {
            Some(mut w) => {
                w.flush()?;
                Ok(Some(self.path))
            }
            None => Ok(None),
        }
    }
}
