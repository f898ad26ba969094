//! fhir2parquet: FHIR Bulk Data NDJSON to typed, spec-driven Parquet, and SQL over it.
//!
//! The data path, one module each:
//! [`input`] (files, folders, manifests, gzip, stdin → lines) →
//! [`decode`] (a FHIR resource → typed Arrow columns, driven by [`schema`]) →
//! [`convert`] (the parallel pipeline and the Parquet dataset) →
//! [`encode`] (Parquet rows back to FHIR JSON); [`session`] (a DataFusion session over the
//! dataset) and [`output`] (results printed and collected) below [`sql`] (the shell) and
//! [`view`] (SQL on FHIR ViewDefinitions compiled to DataFusion plans).
//!
//! The functions take plain option structs; the command line ([`cmd`], the `cli` feature) only
//! turns flags into them. The README's example:
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use fhir2parquet::{sql::Shell, view};
//!
//! let shell = Shell::open("out".as_ref(), None)?; // a converted dataset
//! let batches = shell.run_sql("SELECT gender, COUNT(*) FROM Patient GROUP BY 1")?;
//! let view = view::load("examples/views/patient_demographics.json".as_ref())?;
//! let rows = view::batches(&shell, &view)?; // Arrow record batches
//! # let _ = (batches, rows);
//! # Ok(()) }
//! ```

pub mod background;
pub mod choice;
/// The command line (the `cli` feature): flags turned into the option structs below.
#[cfg(feature = "cli")]
pub mod cmd;
pub mod convert;
pub mod dataset;
pub mod decode;
pub mod encode;
pub mod exit;
pub mod export;
/// The bodies of the fuzz targets (`fuzz/`), also run by the tests: not an API.
#[doc(hidden)]
pub mod fuzz;
pub mod input;
pub mod interrupt;
pub mod json;
pub mod output;
pub mod reference;
pub mod schema;
pub mod session;
pub mod sql;
pub mod store;
pub mod upload;
pub mod view;
pub mod warehouse;
