//! `OUT/_export/log.ndjson`: the Bulk Data client log.

use super::spool::ExportDir;
use serde_json::Value;
use std::sync::Arc;

/// `OUT/_export/log.ndjson`: one event per line, in the form of the Bulk Data client log
/// (bulk-data-client's `log.ndjson`): `exportId` (the status URL, once there is one),
/// `timestamp` (ISO 8601), `eventId` and `eventDetail`, with its events (`kickoff`,
/// `status_progress`, `status_complete`, `status_page_complete`, `status_error`,
/// `manifest_complete`, `download_request`, `download_complete`, `download_error`,
/// `export_complete`, `export_error`) and two of ours: `request_retry` and `resume`.
/// On a store the log is written whole at milestones (an object cannot be appended to).
#[derive(Clone)]
pub(super) struct EventLog {
    pub(super) dir: ExportDir,
    pub(super) export_id: Arc<std::sync::Mutex<String>>,
    pub(super) lines: Arc<std::sync::Mutex<String>>,
}

pub(super) const LOG: &str = "log.ndjson";

impl EventLog {
    pub(super) fn new(dir: ExportDir) -> Self {
        // On a store the whole log is rewritten, so a resumed export starts from the one it
        // has; a local log is appended to and never held in memory.
        let before = match &dir {
            ExportDir::Remote(..) => dir.read(LOG).ok().flatten().unwrap_or_default(),
            ExportDir::Local(_) => Vec::new(),
        };
        // Until the kick-off gives a status URL: an id of this attempt.
        let id = format!(
            "fhir2parquet-{}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ"),
            std::process::id()
        );
        EventLog {
            dir,
            export_id: Arc::new(std::sync::Mutex::new(id)),
            lines: Arc::new(std::sync::Mutex::new(
                String::from_utf8_lossy(&before).into_owned(),
            )),
        }
    }

    pub(super) fn log(&self, event: &str, detail: Value) {
        let line = serde_json::json!({
            "exportId": self.export_id.lock().expect("no panic").clone(),
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "eventId": event,
            "eventDetail": detail,
        });
        // One event at a time: downloads log from several threads, and a local line must not
        // be interleaved with another.
        let mut lines = self.lines.lock().expect("no panic");
        match &self.dir {
            ExportDir::Remote(..) => lines.push_str(&format!("{line}\n")),
            ExportDir::Local(d) => {
                let append = || -> std::io::Result<()> {
                    fs_err::create_dir_all(d)?;
                    let mut f = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(d.join(LOG))?;
                    use std::io::Write;
                    writeln!(f, "{line}")
                };
                let _ = append();
            }
        }
    }

    /// Writes the log whole (stores only; a local log is appended line by line).
    pub(super) fn flush(&self) {
        if let ExportDir::Remote(..) = &self.dir {
            let lines = self.lines.lock().expect("no panic").clone();
            let _ = self.dir.write(LOG, lines.as_bytes());
        }
    }
}
