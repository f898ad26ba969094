//! The run record (`OUT/_fhir2parquet.json`), the progress bar and the summary table.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::{ConvertOptions, RejectReason};
use crate::decode::OverflowStats;

#[derive(Debug, Default, Clone, Serialize)]
pub struct TypeRecord {
    pub rows: u64,
    pub input_bytes: u64,
    pub files: u64,
    pub parquet_bytes: u64,
    pub seconds: f64,
    pub overflow: OverflowStats,
    /// Files of the run rewritten with more columns, so that every file of the type holds the
    /// same ones (see `dataset::unify`), and the seconds that took.
    #[serde(skip_serializing_if = "is_zero")]
    pub files_widened: u64,
    #[serde(skip_serializing_if = "is_zero_f64")]
    pub widen_seconds: f64,
    /// The version of the type's Delta table this run committed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_version: Option<u64>,
    /// What a `--merge` did to the type's table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merge: Option<super::merge::MergeCounts>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_f64(n: &f64) -> bool {
    *n == 0.0
}

impl TypeRecord {
    /// Files of the type rewritten with more columns (`done`), in `seconds`.
    pub fn add_widened(&mut self, done: &crate::dataset::unify::Unified, seconds: f64) {
        self.parquet_bytes =
            (self.parquet_bytes + done.bytes_after).saturating_sub(done.bytes_before);
        self.files_widened += done.widened as u64;
        self.widen_seconds += seconds;
    }

    pub fn merge(&mut self, o: &TypeRecord) {
        self.rows += o.rows;
        self.input_bytes += o.input_bytes;
        self.files += o.files;
        self.parquet_bytes += o.parquet_bytes;
        self.seconds += o.seconds;
        self.overflow.merge(&o.overflow);
        self.files_widened += o.files_widened;
        self.widen_seconds += o.widen_seconds;
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct InputRecord {
    pub path: String,
    pub size: u64,
    /// BLAKE3 of the file (`b3sum FILE` prints the same).
    pub blake3: Option<String>,
    /// Lines read, blank ones included.
    pub lines: u64,
    /// Non-blank lines: rows plus rejects.
    pub resources: u64,
    /// Header lines, not resources of the data (see `ConvertOptions::header_type`).
    #[serde(skip_serializing_if = "is_zero")]
    pub headers: u64,
    /// What a bulk manifest said the file holds.
    pub expected_count: Option<u64>,
    pub error: Option<String>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct RejectRecord {
    pub count: u64,
    pub by_reason: BTreeMap<RejectReason, u64>,
    /// Lines of resource types the run's FHIR version lacks and another version has, by type.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub other_versions_types: BTreeMap<String, u64>,
    pub files: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub tool: String,
    pub tool_version: String,
    pub schema_version: String,
    pub fhir_version: String,
    pub run_id: String,
    pub started: String,
    pub seconds: f64,
    pub append: bool,
    pub partition_by: Vec<String>,
    pub inputs: Vec<InputRecord>,
    pub types: BTreeMap<String, TypeRecord>,
    pub rejects: RejectRecord,
    /// The export the inputs came from (`fhir2parquet export`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export: Option<serde_json::Value>,
    /// When the data looks like another FHIR version than it was converted as: which, and how
    /// to ask for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_hint: Option<String>,
    /// Earlier runs of an `--append`ed dataset, as they were recorded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub previous_runs: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Previous {
    #[serde(default)]
    previous_runs: Vec<serde_json::Value>,
}

impl RunRecord {
    pub fn new(run_id: &str, fhir_version: &str, opts: &ConvertOptions) -> Self {
        RunRecord {
            tool: "fhir2parquet".into(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            schema_version: crate::schema::SCHEMA_VERSION.into(),
            fhir_version: fhir_version.into(),
            run_id: run_id.into(),
            started: chrono::Utc::now().to_rfc3339(),
            seconds: 0.0,
            append: opts.append,
            partition_by: opts
                .partition_by
                .iter()
                .map(|p| format!("{}.{} -> {}", p.resource_type, p.element, p.column()))
                .collect(),
            inputs: Vec::new(),
            types: BTreeMap::new(),
            rejects: RejectRecord::default(),
            version_hint: None,
            export: opts.export.clone(),
            previous_runs: Vec::new(),
        }
    }

    /// Problems that make the run finish with the "completed with problems" exit code.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.rejects.count > 0 {
            out.push(format!(
                "{} line(s) rejected: see {}/ for each line, its file, line number and reason",
                self.rejects.count,
                super::REJECTS_DIR
            ));
        }
        let failures = self
            .export
            .as_ref()
            .and_then(|e| e["server_failures"].as_array())
            .map_or(0, Vec::len);
        if failures > 0 {
            let types = self
                .export
                .as_ref()
                .and_then(|e| e["incomplete_types"].as_array());
            let types: Vec<&str> = types
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str())
                .collect();
            out.push(format!(
                "the server reported {failures} failure(s) in its error files: the dataset is \
                 partial ({}); see _export/outcome-*.ndjson",
                match types.is_empty() {
                    true => "it names no type".to_string(),
                    false => format!("incomplete: {}", types.join(", ")),
                }
            ));
        }
        for i in &self.inputs {
            if let Some(e) = &i.error {
                out.push(format!(
                    "{}: {e}; {} line(s) were read before it and are kept",
                    i.path, i.lines
                ));
            }
            if let Some(n) = i.expected_count {
                // A manifest may count a file's header lines or not.
                if n != i.resources && n != i.resources + i.headers {
                    out.push(format!(
                        "{}: the manifest says {n} resources, the file holds {}",
                        i.path, i.resources
                    ));
                }
            }
        }
        out
    }

    /// The record as JSON; with `--append`, the `previous` record's runs are carried over.
    pub fn render(&mut self, previous: Option<&str>) -> Result<String> {
        if self.append {
            if let Some(text) = previous {
                if let Ok(prev) = serde_json::from_str::<serde_json::Value>(text) {
                    let older: Previous =
                        serde_json::from_value(prev.clone()).unwrap_or(Previous {
                            previous_runs: vec![],
                        });
                    self.previous_runs = older.previous_runs;
                    let mut prev = prev;
                    if let Some(o) = prev.as_object_mut() {
                        o.remove("previous_runs");
                    }
                    self.previous_runs.push(prev);
                }
            }
        }
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// The summary table: rows, rejects, overflow, MB and seconds per type.
    pub fn print_table(&self, w: &mut dyn Write) -> std::io::Result<()> {
        writeln!(
            w,
            "{:<28} {:>10} {:>9} {:>10} {:>9} {:>8}",
            "type", "rows", "overflow", "input MB", "out MB", "seconds"
        )?;
        let mut rows = 0;
        let (mut mb_in, mut mb_out) = (0.0, 0.0);
        for (t, r) in &self.types {
            let (i, o) = (r.input_bytes as f64 / 1e6, r.parquet_bytes as f64 / 1e6);
            writeln!(
                w,
                "{t:<28} {:>10} {:>9} {i:>10.2} {o:>9.2} {:>8.2}",
                r.rows, r.overflow.values, r.seconds
            )?;
            rows += r.rows;
            mb_in += i;
            mb_out += o;
        }
        writeln!(
            w,
            "{:<28} {rows:>10} {:>9} {mb_in:>10.2} {mb_out:>9.2} {:>8.2}",
            "total",
            self.types.values().map(|r| r.overflow.values).sum::<u64>(),
            self.seconds
        )?;
        writeln!(w, "rejected lines: {}", self.rejects.count)?;
        for (t, r) in &self.types {
            if let Some(m) = &r.merge {
                writeln!(
                    w,
                    "merged into {t}: {} inserted, {} updated, {} deleted, {} unchanged; {} \
                     input lines superseded, {} deletions of unknown ids",
                    m.inserted,
                    m.updated,
                    m.deleted,
                    m.unchanged,
                    m.superseded,
                    m.deletes_of_unknown_ids
                )?;
            }
        }
        let secs = self.seconds.max(1e-9);
        writeln!(
            w,
            "throughput: {:.1} MB/s, {:.0} resources/s",
            mb_in / secs,
            rows as f64 / secs
        )
    }
}

pub(super) fn progress_bar(show: bool, total: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} {msg} ETA {eta}",
        )
        .expect("valid template"),
    );
    bar
}
