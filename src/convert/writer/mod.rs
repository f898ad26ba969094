//! Parquet output: one file per resource type (and partition) at a time, shared by the workers.
//!
//! Each type (or partition) has one [`Folder`] in the [`FileSet`]: one file being written and
//! one row group in progress, shared by every worker. A worker hands in a decoded batch and
//! encodes the columns of the fields no other worker is encoding (batches in, compressed column
//! chunks out, so the costly part runs on every core); a full row group is appended to the file.
//! A type's data thus lands in one file per run (a new one past `--target-file-mb`) and one row
//! group per `--row-group-rows`, whatever the number of threads: a wide FHIR schema costs a
//! footer entry of about a hundred bytes per column in every row group, and the levels of its
//! empty columns a page each, so fewer row groups is smaller output.
//!
//! Each row group has a `Shape`: the typed schema's columns it holds. With [`Columns::Present`]
//! (the default) that is the columns that had a value so far, so that empty columns cost
//! neither encoding nor bytes (a batch with a value outside the shape ends the row group and its
//! file, and widens the shape; the run widens the type's earlier files to match at the end,
//! see [`crate::dataset::unify`]); with [`Columns::All`], every column.

mod columns;
mod files;
mod options;
mod row_group;
mod target;

pub use files::{abort_all, complete_all, FileSet, Folder, FolderFiles};
pub use options::{Codec, Columns, WriteOptions};
pub use target::{folder_type, Target};
