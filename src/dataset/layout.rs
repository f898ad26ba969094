//! Every name of a dataset's layout, in one place: what `convert`, `export`, `upload` and the
//! readers write and look for beside the resource type folders.
//!
//! ```text
//! OUT/
//!   _fhir2parquet.json               the last run's record            RUN_RECORD
//!   _fhir2parquet.lock               one writer at a time             LOCK
//!   _rejects/                        rejected lines                   REJECTS_DIR
//!   _export/                         an export's state, log, files    EXPORT_DIR, EXPORT_FILES_DIR
//!   _deleted/                        resources a server deleted       DELETED_DIR
//!   .fhir2parquet-tmp-<run>/         a plain run before its publish   tmp_dir
//!   _fhir2parquet-pending-<run>.json a plain run being published      pending_list
//!   <Type>/part-<run>-00000.parquet  data files                       part_file
//!   <Type>/_fhir2parquet-uncommitted a new table before its version 0 UNCOMMITTED
//! ```
//!
//! Names starting with `_` or `.` are skipped by Spark, Hive, Athena and Trino.

/// The run record: the last run's types, rows, table versions and rejects.
pub const RUN_RECORD: &str = "_fhir2parquet.json";
/// The lock of the one writer.
pub const LOCK: &str = "_fhir2parquet.lock";
/// The rejected lines of the last run (of every run with `--append`).
pub const REJECTS_DIR: &str = "_rejects";
/// An export's state, log, outcome and deleted files.
pub const EXPORT_DIR: &str = "_export";
/// An export's downloads, kept for `--resume`.
pub const EXPORT_FILES_DIR: &str = "_export/files";
/// The resources a server reported deleted.
pub const DELETED_DIR: &str = "_deleted";
/// The beginning of a plain (`--format parquet`) run's temporary folder's name.
pub const TMP_PREFIX: &str = ".fhir2parquet-tmp-";
/// The beginning of a plain run's pending list's name on a store.
pub const PENDING_PREFIX: &str = "_fhir2parquet-pending-";

/// In a type's folder that has no Delta table yet: files of a run are being placed there for
/// the table's first commit. Readers skip such a folder (its files are no table's yet) where no
/// version was committed; the writer removes it after the commit, `vacuum` after a killed run.
pub const UNCOMMITTED: &str = "_fhir2parquet-uncommitted";

/// A plain run's temporary folder.
pub fn tmp_dir(run_id: &str) -> String {
    format!("{TMP_PREFIX}{run_id}")
}

/// A plain run's pending list (the journal of its publish).
pub fn pending_list(run_id: &str) -> String {
    format!("{PENDING_PREFIX}{run_id}.json")
}

/// Whether a name is a pending list's.
pub fn is_pending_list(name: &str) -> bool {
    name.starts_with(PENDING_PREFIX) && name.ends_with(".json")
}

/// A data file a run writes: the `seq`-th of its file set `prefix` (the run id, and more where a
/// run writes several sets).
pub fn part_file(prefix: &str, seq: usize) -> String {
    format!("part-{prefix}-{seq:05}.parquet")
}
