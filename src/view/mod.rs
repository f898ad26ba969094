//! `view`: SQL on FHIR v2 ViewDefinitions, compiled to DataFusion plans.
//!
//! A ViewDefinition ([`definition`]) is checked, its FHIRPath compiled against the schema
//! ([`fhirpath`]), and the whole view planned as DataFusion operators over the resource's
//! Parquet table ([`plan`]): `where` is a filter, `forEach` an unnest, `unionAll` a union, and each
//! FHIRPath expression one vectorized function ([`udf`]) over the columns it reads. A view is a
//! `DataFrame`, so it runs, streams and joins like any query. Paths past the typed columns read
//! the resource's JSON (typed columns and `_overflow` put together) instead.
//!
//! The compiled view ([`plan::compile_view`]) is engine-neutral: [`lower`] turns it into the SQL
//! of DuckDB, Spark, Trino, BigQuery or Snowflake (`view --sql`).
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use fhir2parquet::session::Session;
//! use fhir2parquet::view::{self, ViewDefinition};
//!
//! let session = Session::open("out".as_ref(), None)?;
//! let view = ViewDefinition::from_json(&serde_json::json!({
//!     "resource": "Patient",
//!     "select": [{"column": [
//!         {"name": "id", "path": "getResourceKey()"},
//!         {"name": "family", "path": "name.where(use = 'official').family.first()"}
//!     ]}]
//! }))?;
//! let batches = view::batches(&session, &view)?;
//! # Ok(()) }
//! ```

pub mod definition;
pub mod fhirpath;
pub mod lower;
pub mod plan;
pub mod udf;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use arrow::array::RecordBatch;
use datafusion::dataframe::DataFrame;
use futures::StreamExt;

pub use definition::ViewDefinition;

use crate::output::{collect_with_schema, print_batches, readable, PrintFormat};
use crate::schema::FhirVersion;
use crate::session::Session;

/// Reads a ViewDefinition file.
pub fn load(path: &Path) -> Result<ViewDefinition> {
    let text =
        fs_err::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    ViewDefinition::from_json(&v).with_context(|| format!("{}", path.display()))
}

/// The name a view's table gets: its `name`, else the file name without `.json`.
pub fn table_name(view: &ViewDefinition, path: &Path) -> String {
    view.name.clone().unwrap_or_else(|| {
        let stem = path.file_name().and_then(|s| s.to_str()).unwrap_or("view");
        stem.trim_end_matches(".json")
            .trim_end_matches(".ViewDefinition")
            .to_string()
    })
}

/// The view as a DataFrame over the session's dataset. A resource type with no data gives no
/// rows.
pub fn frame(session: &Session, view: &ViewDefinition) -> Result<DataFrame> {
    frame_with(session, view, false)
}

/// The view with every path evaluated over the resources' JSON instead of the typed columns
/// (see [`plan::plan_with`]): the same rows, for checks and measurements.
pub fn frame_over_json(session: &Session, view: &ViewDefinition) -> Result<DataFrame> {
    frame_with(session, view, true)
}

fn frame_with(session: &Session, view: &ViewDefinition, all_json: bool) -> Result<DataFrame> {
    // The view's paths mean what the data's FHIR version defines.
    let view = &view.for_version(session.fhir_version)?;
    let table = if session.tables.contains(&view.resource) {
        session.block_on(session.ctx.table(datafusion::common::TableReference::bare(
            view.resource.as_str(),
        )))?
    } else {
        let schema = crate::schema::node::arrow_schema(view.fhir_version, &view.resource)
            .ok_or_else(|| anyhow!("{} is not a resource type of the data", view.resource))?;
        session
            .ctx
            .read_batch(RecordBatch::new_empty(Arc::new(schema)))?
    };
    plan::plan_with(view, table, all_json)
}

/// Runs a view and collects its rows.
pub fn batches(session: &Session, view: &ViewDefinition) -> Result<Vec<RecordBatch>> {
    let df = frame(session, view)?;
    session.block_on(df.collect())
}

/// Registers a view as a table of the session, to query and join in SQL.
pub fn register(session: &mut Session, name: &str, view: &ViewDefinition) -> Result<()> {
    let df = frame(session, view)?;
    session.ctx.register_table(
        datafusion::common::TableReference::bare(name),
        df.into_view(),
    )?;
    if !session.tables.iter().any(|t| t == name) {
        session.tables.push(name.to_string());
    }
    Ok(())
}

/// `view --sql`: one statement per view, for the engine to run.
fn print_sql(args: &ViewOptions, files: &[PathBuf], dialect: lower::Dialect) -> Result<i32> {
    let mut opts = lower::SqlOptions::new(dialect);
    for t in &args.table {
        let Some((ty, name)) = t.split_once('=') else {
            bail!("--table {t}: give TYPE=NAME, e.g. --table Patient=fhir.patient")
        };
        if !FhirVersion::any_has_resource(ty) {
            bail!("--table {t}: {ty} is not a FHIR resource type");
        }
        opts.tables.insert(ty.to_string(), name.to_string());
    }
    let mut statements = Vec::new();
    for f in files {
        let v = load(f)?;
        let v = match args.fhir_version {
            Some(version) => v
                .for_version(version)
                .with_context(|| format!("{}", f.display()))?,
            None => v,
        };
        let name = table_name(&v, f);
        opts.create_view = match args.create_view.as_deref() {
            None => None,
            Some("") => Some(name.clone()),
            Some(_) if files.len() > 1 => bail!(
                "--create-view NAME names one view; with {} views give --create-view alone (each \
                 view is named after its `name` or file)",
                files.len()
            ),
            Some(n) => Some(n.to_string()),
        };
        let sql = lower::to_sql(&v, &opts).with_context(|| format!("{}", f.display()))?;
        statements.push(format!("-- {name}\n{sql};\n"));
    }
    let mut out = std::io::stdout().lock();
    for s in statements {
        std::io::Write::write_all(&mut out, format!("{s}\n").as_bytes())?;
    }
    Ok(0)
}

/// The ViewDefinition files named: files as they are, folders' `*.json`.
pub fn view_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = fs_err::read_dir(p)
                .with_context(|| format!("cannot read {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|e| e == "json"))
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    if out.is_empty() {
        bail!("no ViewDefinition (*.json) found in the paths given");
    }
    Ok(out)
}

/// How `-o` is written, by its extension.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum FileFormat {
    Parquet,
    Csv,
    Ndjson,
    Json,
}

fn file_format(path: &Path) -> Option<FileFormat> {
    match path.extension()?.to_str()? {
        "parquet" => Some(FileFormat::Parquet),
        "csv" => Some(FileFormat::Csv),
        "ndjson" | "jsonl" => Some(FileFormat::Ndjson),
        "json" => Some(FileFormat::Json),
        _ => None,
    }
}

/// The `view` command.
/// What the `view` command runs, on what, and where the rows go.
#[derive(Clone, Debug, Default)]
pub struct ViewOptions {
    /// ViewDefinition files (JSON), or folders of them.
    pub views: Vec<PathBuf>,
    /// The dataset to run them on: a folder written by convert, or its s3://, gs://, az:// URL.
    pub data: Option<String>,
    /// Print each view as one SQL statement of this engine instead of running it.
    pub sql: Option<lower::Dialect>,
    /// With `sql`: a CREATE OR REPLACE VIEW statement of this name ("" for each view's `name`).
    pub create_view: Option<String>,
    /// With `sql`: the table of a resource type, TYPE=NAME.
    pub table: Vec<String>,
    /// Write the rows to this file (.parquet, .csv, .ndjson, .json) or, with several views,
    /// folder, instead of printing them.
    pub out: Option<PathBuf>,
    /// How printed rows look.
    pub format: PrintFormat,
    /// Memory limit (2G, 512M).
    pub memory_limit: Option<String>,
    /// The tables as they were: a version or a time.
    pub as_of: Option<String>,
    /// With `sql`: the FHIR version of the tables (default: the view's `fhirVersion`, else R4).
    /// Without, the dataset's version is used.
    pub fhir_version: Option<FhirVersion>,
}

/// The `view` command.
pub fn run(args: ViewOptions, stores: &crate::store::StoreOptions) -> Result<i32> {
    let files = view_files(&args.views)?;
    if let Some(dialect) = args.sql {
        return print_sql(&args, &files, dialect);
    }
    // Every view is checked and planned before anything is written.
    let Some(data) = &args.data else {
        bail!("--data OUT: the dataset to run the views on (or --sql DIALECT to print SQL)")
    };
    let data = crate::store::Location::parse(data, stores)?;
    let as_of = args
        .as_of
        .as_deref()
        .map(crate::dataset::delta::AsOf::parse)
        .transpose()?;
    let session = Session::open_as_of(&data, args.memory_limit.as_deref(), as_of)?;
    let mut views = Vec::new();
    for f in &files {
        let v = load(f)?;
        let df = frame(&session, &v).with_context(|| format!("{}", f.display()))?;
        views.push((table_name(&v, f), df));
    }
    match &args.out {
        None => {
            let mut out = std::io::stdout().lock();
            for (name, df) in views {
                if files.len() > 1 {
                    eprintln!("-- {name}");
                }
                let batches = session.block_on(collect_with_schema(df))?;
                print_batches(&batches, args.format, &mut out)?;
            }
        }
        Some(out) => match file_format(out) {
            Some(fmt) if views.len() == 1 => {
                let (name, df) = views.pop().expect("one view");
                let rows = write(&session, df, out, fmt)?;
                eprintln!("{name}: {rows} rows → {}", out.display());
            }
            Some(_) => bail!(
                "-o {}: {} views need a folder to be written to (-o DIR)",
                out.display(),
                views.len()
            ),
            None => {
                fs_err::create_dir_all(out)
                    .with_context(|| format!("cannot create {}", out.display()))?;
                for (name, df) in views {
                    let path = out.join(format!("{name}.parquet"));
                    let rows = write(&session, df, &path, FileFormat::Parquet)?;
                    eprintln!("{name}: {rows} rows → {}", path.display());
                }
            }
        },
    }
    Ok(crate::exit::OK)
}

/// Streams a view into a file: written under a temporary name, renamed when complete.
fn write(session: &Session, df: DataFrame, path: &Path, fmt: FileFormat) -> Result<usize> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs_err::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|s| s.to_str()).unwrap_or("view"),
        std::process::id()
    ));
    let result = (|| -> Result<usize> {
        let file = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let file = std::io::BufWriter::new(file);
        session.runtime().block_on(async {
            let mut stream = df.execute_stream().await?;
            let schema = stream.schema();
            let mut sink = Sink::new(fmt, file, schema.clone())?;
            let mut rows = 0;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows();
                sink.write(&batch)?;
            }
            if rows == 0 {
                // The columns all the same: a CSV header, a JSON `[]`.
                sink.write(&RecordBatch::new_empty(schema))?;
            }
            sink.finish()?;
            Ok::<_, anyhow::Error>(rows)
        })
    })();
    match result {
        Ok(rows) => {
            fs_err::rename(&tmp, path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(rows)
        }
        Err(e) => {
            let _ = fs_err::remove_file(&tmp);
            Err(e)
        }
    }
}

type Out = std::io::BufWriter<std::fs::File>;

enum Sink {
    Parquet(parquet::arrow::ArrowWriter<Out>),
    Csv(arrow::csv::Writer<Out>),
    Ndjson(arrow::json::Writer<Out, arrow::json::writer::LineDelimited>),
    Json(arrow::json::Writer<Out, arrow::json::writer::JsonArray>),
}

impl Sink {
    fn new(fmt: FileFormat, out: Out, schema: arrow::datatypes::SchemaRef) -> Result<Sink> {
        let json = arrow::json::WriterBuilder::new().with_explicit_nulls(true);
        Ok(match fmt {
            FileFormat::Parquet => {
                let props = parquet::file::properties::WriterProperties::builder()
                    .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
                    .build();
                Sink::Parquet(parquet::arrow::ArrowWriter::try_new(
                    out,
                    schema,
                    Some(props),
                )?)
            }
            FileFormat::Csv => Sink::Csv(
                arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(out),
            ),
            FileFormat::Ndjson => Sink::Ndjson(json.build(out)),
            FileFormat::Json => Sink::Json(json.build(out)),
        })
    }

    fn write(&mut self, b: &RecordBatch) -> Result<()> {
        match self {
            Sink::Parquet(w) => w.write(b)?,
            Sink::Csv(w) => w.write(&readable(b, true)?)?,
            Sink::Ndjson(w) => w.write(b)?,
            Sink::Json(w) => w.write(b)?,
        }
        Ok(())
    }

    fn finish(self) -> Result<()> {
        match self {
            Sink::Parquet(w) => {
                w.close()?;
            }
            Sink::Csv(w) => {
                use std::io::Write;
                w.into_inner().flush()?;
            }
            Sink::Ndjson(mut w) => {
                w.finish()?;
                use std::io::Write;
                w.into_inner().flush()?;
            }
            Sink::Json(mut w) => {
                w.finish()?;
                use std::io::Write;
                w.into_inner().flush()?;
            }
        }
        Ok(())
    }
}
