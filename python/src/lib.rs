//! `fhir2parquet._native`: the extension module under the Python package (`python/fhir2parquet`),
//! a thin layer over the library. Work runs with the GIL released, on a thread of its own while
//! the caller's thread watches for Ctrl-C (turned into the library's stop request, then
//! `KeyboardInterrupt`) and reports progress. Arrow data crosses into Python through the Arrow C
//! stream interface, without copying.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, RecordBatch, RecordBatchIterator, RecordBatchReader, StringArray};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::error::ArrowError;
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::StreamExt;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyKeyboardInterrupt};
use pyo3::prelude::*;

use fhir2parquet::convert::{Columns, ConvertOptions, PartitionSpec, Progress, RunRecord};
use fhir2parquet::dataset::delta::AsOf;
use fhir2parquet::schema::FhirVersion;
use fhir2parquet::session::Session;
use fhir2parquet::store::{redact, Location, StoreOptions};
use fhir2parquet::{cmd, interrupt};

mod arrow_py;

/// mimalloc, as in the binary: convert allocates and frees Arrow buffers on every thread.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

create_exception!(
    _native,
    Fhir2ParquetError,
    PyException,
    "An error of fhir2parquet; its text is the command line's message."
);
create_exception!(
    _native,
    BadInputError,
    Fhir2ParquetError,
    "The input cannot be used as given: a missing file, a resource type FHIR does not have, a \
     query or view that does not compile, data that is not NDJSON."
);
create_exception!(
    _native,
    StoreError,
    Fhir2ParquetError,
    "An object store (S3, GCS, Azure) refused or failed a request."
);
create_exception!(
    _native,
    ServerError,
    Fhir2ParquetError,
    "A FHIR server failed an export: its answer, its files, its sign-in."
);

/// Which exception an error is when nothing in its chain says.
#[derive(Clone, Copy)]
enum Kind {
    Input,
    Server,
    Other,
}

fn error(e: anyhow::Error, default: Kind) -> PyErr {
    let text = redact(&cmd::message(&e));
    if interrupt::is_interrupt(&e) {
        return PyKeyboardInterrupt::new_err(text);
    }
    for cause in e.chain() {
        if cause.downcast_ref::<object_store::Error>().is_some() {
            return StoreError::new_err(text);
        }
        if cause.downcast_ref::<reqwest::Error>().is_some() {
            return ServerError::new_err(text);
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidData
            ) {
                return BadInputError::new_err(text);
            }
        }
    }
    match default {
        Kind::Input => BadInputError::new_err(text),
        Kind::Server => ServerError::new_err(text),
        Kind::Other => Fhir2ParquetError::new_err(text),
    }
}

/// Runs `work` on a thread of its own with the GIL released, and returns as soon as it ends.
/// Until then, every 50 ms, the caller's thread takes the GIL back to call `tick` (progress) and
/// look for Ctrl-C: a signal asks the work to stop ([`interrupt::request`]), waits for it to end
/// as a stopped run ends (nothing published), and raises `KeyboardInterrupt`.
fn watched<T: Send>(
    py: Python<'_>,
    work: impl FnOnce() -> anyhow::Result<T> + Send,
    mut tick: impl FnMut(Python<'_>) -> PyResult<()>,
) -> PyResult<anyhow::Result<T>> {
    interrupt::clear();
    std::thread::scope(|scope| {
        let (done, ended) = crossbeam_channel::bounded::<()>(1);
        let handle = scope.spawn(move || {
            let outcome = work();
            let _ = done.send(());
            outcome
        });
        let mut signal: Option<PyErr> = None;
        while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
            py.detach(|| ended.recv_timeout(Duration::from_millis(50)))
        {
            if signal.is_none() {
                if let Err(e) = py.check_signals() {
                    interrupt::request();
                    signal = Some(e);
                }
                if let Err(e) = tick(py) {
                    interrupt::request();
                    signal = Some(e);
                }
            }
        }
        let outcome = py.detach(|| handle.join());
        interrupt::clear();
        if let Some(e) = signal {
            return Err(e);
        }
        outcome
            .map_err(|_| Fhir2ParquetError::new_err("the run panicked (a bug: please report it)"))
    })
}

fn stores(endpoint: Option<String>) -> StoreOptions {
    StoreOptions {
        endpoint,
        retries: None,
    }
}

/// The command line, as the `fhir2parquet` binary runs it (`argv` with the program's name
/// first): its exit code.
#[pyfunction]
fn cli(py: Python<'_>, argv: Vec<String>) -> i32 {
    py.detach(|| cmd::main(argv))
}

/// Converts `inputs` into the dataset `out`: the run record as JSON.
#[pyfunction]
#[pyo3(signature = (inputs, out, *, partition_by, columns, threads, merge, append, plain, endpoint, progress, fhir_version = None))]
#[allow(clippy::too_many_arguments)]
fn convert(
    py: Python<'_>,
    inputs: Vec<String>,
    out: String,
    partition_by: Vec<String>,
    columns: String,
    threads: Option<usize>,
    merge: bool,
    append: bool,
    plain: bool,
    endpoint: Option<String>,
    progress: Option<Py<PyAny>>,
    fhir_version: Option<String>,
) -> PyResult<String> {
    let stores = stores(endpoint);
    let version = fhir_version
        .as_deref()
        .map(self::fhir_version)
        .transpose()?;
    let prepare = || -> anyhow::Result<(Vec<Location>, ConvertOptions)> {
        let mut opts = ConvertOptions::new(Location::parse(&out, &stores)?);
        if let Some(t) = threads {
            opts = opts.with_threads(t);
        }
        opts.merge = merge;
        opts.append = append;
        opts.fhir_version = version;
        if plain {
            opts.format = fhir2parquet::dataset::Format::Parquet;
        }
        opts.write.columns = match columns.as_str() {
            "present" => Columns::Present,
            "all" => Columns::All,
            other => anyhow::bail!("columns={other:?}: give \"present\" or \"all\""),
        };
        opts.partition_by = partition_by
            .iter()
            .map(|s| PartitionSpec::parse(s))
            .collect::<anyhow::Result<_>>()?;
        let inputs = inputs
            .iter()
            .map(|i| Location::parse(i, &stores))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok((inputs, opts))
    };
    let (inputs, mut opts) = prepare().map_err(|e| error(e, Kind::Input))?;
    let watch = Arc::new(Progress::default());
    opts.watch = Some(watch.clone());
    let record = watched(
        py,
        || fhir2parquet::convert::run(&inputs, &opts),
        |py| match &progress {
            Some(f) => {
                use std::sync::atomic::Ordering::Relaxed;
                f.call1(
                    py,
                    (
                        watch.read_bytes.load(Relaxed),
                        watch.total_bytes.load(Relaxed),
                        watch.resources.load(Relaxed),
                    ),
                )?;
                Ok(())
            }
            None => Ok(()),
        },
    )?
    .map_err(|e| error(e, Kind::Other))?;
    outcome_json(&record)
}

/// A run record and its problems (rejected lines, damaged inputs), as JSON.
fn outcome_json(record: &RunRecord) -> PyResult<String> {
    let value = serde_json::json!({
        "record": record,
        "problems": record.problems(),
    });
    Ok(value.to_string())
}

/// Runs `export` with the command line's flags (`argv` after `export`): the run record as
/// JSON, or `{"already_published": ...}` for a resumed export already published.
#[pyfunction]
fn export(py: Python<'_>, argv: Vec<String>, endpoint: Option<String>) -> PyResult<String> {
    use clap::Parser;
    let mut full = vec!["fhir2parquet".to_string(), "export".to_string()];
    full.extend(argv);
    let parsed =
        cmd::args::Cli::try_parse_from(&full).map_err(|e| BadInputError::new_err(e.to_string()))?;
    let cmd::args::Command::Export(args) = parsed.command else {
        unreachable!("the command is export");
    };
    let stores = stores(endpoint);
    let outcome = watched(py, || cmd::export_run(*args, &stores), |_| Ok(()))?
        .map_err(|e| error(e, Kind::Server))?;
    match outcome {
        fhir2parquet::export::Exported::Published(record) => outcome_json(&record),
        fhir2parquet::export::Exported::AlreadyPublished { job, run_id } => Ok(
            serde_json::json!({"already_published": {"job": job, "run_id": run_id}}).to_string(),
        ),
    }
}

/// A query's batches as they come, from a session kept alive as long as they are read.
struct Stream {
    session: Session,
    stream: SendableRecordBatchStream,
}

impl Iterator for Stream {
    type Item = Result<RecordBatch, ArrowError>;

    /// The next batch, on the session's runtime. Not through `Session::block_on`: nothing asks
    /// this stream to stop (Python pulls a batch at a time, and Ctrl-C lands between them), so
    /// its stop watch would be a thread for every batch for nothing.
    fn next(&mut self) -> Option<Self::Item> {
        self.session
            .runtime()
            .block_on(self.stream.next())
            .map(|r| r.map_err(|e| ArrowError::ExternalError(Box::new(e))))
    }
}

impl RecordBatchReader for Stream {
    fn schema(&self) -> SchemaRef {
        self.stream.schema()
    }
}

fn open(dataset: &str, as_of: Option<&str>, endpoint: Option<String>) -> anyhow::Result<Session> {
    let location = Location::parse(dataset, &stores(endpoint))?;
    let as_of = as_of.map(AsOf::parse).transpose()?;
    Session::open_as_of(&location, None, as_of)
}

/// `"name"` in SQL.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A resource type's table (its columns, rows passing `where`) as a stream of batches.
#[pyfunction]
#[pyo3(signature = (dataset, resource_type, *, columns, r#where, as_of, endpoint))]
fn table<'py>(
    py: Python<'py>,
    dataset: String,
    resource_type: String,
    columns: Option<Vec<String>>,
    r#where: Option<String>,
    as_of: Option<String>,
    endpoint: Option<String>,
) -> PyResult<Bound<'py, PyAny>> {
    let reader = py
        .detach(|| -> anyhow::Result<Box<dyn RecordBatchReader + Send>> {
            let session = open(&dataset, as_of.as_deref(), endpoint)?;
            let version = session.fhir_version;
            let Some(full) = fhir2parquet::schema::node::arrow_schema(version, &resource_type)
            else {
                anyhow::bail!(
                    "{resource_type} is not a resource type of FHIR {version}, the dataset's \
                     version (names are case-sensitive: Patient, Observation, ...)"
                );
            };
            if let Some(cols) = &columns {
                for c in cols {
                    if full.field_with_name(c).is_err() {
                        anyhow::bail!("{resource_type} has no column {c:?}");
                    }
                }
            }
            if !session.tables.contains(&resource_type) {
                // A type the dataset holds no data of: no rows, with its typed schema.
                let schema = match &columns {
                    Some(cols) => {
                        let idx: Vec<usize> = cols
                            .iter()
                            .map(|c| full.index_of(c).expect("checked above"))
                            .collect();
                        full.project(&idx)?
                    }
                    None => full,
                };
                let schema = Arc::new(schema);
                return Ok(Box::new(RecordBatchIterator::new(Vec::new(), schema)));
            }
            let select = match &columns {
                Some(cols) => cols
                    .iter()
                    .map(|c| quoted(c))
                    .collect::<Vec<_>>()
                    .join(", "),
                None => "*".to_string(),
            };
            let mut sql = format!("SELECT {select} FROM {}", quoted(&resource_type));
            if let Some(w) = &r#where {
                sql.push_str(&format!(" WHERE {w}"));
            }
            let df = session.block_on(session.ctx.sql(&sql))?;
            let stream = session.block_on(df.execute_stream())?;
            Ok(Box::new(Stream { session, stream }))
        })
        .map_err(|e| error(e, Kind::Input))?;
    arrow_py::reader(py, reader)
}

fn reader_of(batches: Vec<RecordBatch>) -> Box<dyn RecordBatchReader + Send> {
    let schema = batches
        .first()
        .map(|b| b.schema())
        .unwrap_or_else(|| Arc::new(Schema::empty()));
    Box::new(RecordBatchIterator::new(
        batches.into_iter().map(Ok),
        schema,
    ))
}

/// Collected batches of `work` (run as [`watched`] runs it) as a `pyarrow.RecordBatchReader`.
fn collected<'py>(
    py: Python<'py>,
    work: impl FnOnce() -> anyhow::Result<Vec<RecordBatch>> + Send,
) -> PyResult<Bound<'py, PyAny>> {
    let batches = watched(py, work, |_| Ok(()))?.map_err(|e| error(e, Kind::Input))?;
    arrow_py::reader(py, reader_of(batches))
}

/// The result of SQL over a dataset, as batches.
#[pyfunction]
#[pyo3(signature = (dataset, query, *, endpoint))]
fn sql<'py>(
    py: Python<'py>,
    dataset: String,
    query: String,
    endpoint: Option<String>,
) -> PyResult<Bound<'py, PyAny>> {
    collected(py, || {
        fhir2parquet::sql::Shell::new(open(&dataset, None, endpoint)?).run_sql(&query)
    })
}

/// The rows of a ViewDefinition (JSON text) over a dataset, as batches.
#[pyfunction]
#[pyo3(signature = (view_json, dataset, *, endpoint))]
fn view<'py>(
    py: Python<'py>,
    view_json: String,
    dataset: String,
    endpoint: Option<String>,
) -> PyResult<Bound<'py, PyAny>> {
    collected(py, || {
        let value: serde_json::Value = serde_json::from_str(&view_json)
            .map_err(|e| anyhow::anyhow!("the view is not JSON: {e}"))?;
        let definition = fhir2parquet::view::ViewDefinition::from_json(&value)?;
        fhir2parquet::view::batches(&open(&dataset, None, endpoint)?, &definition)
    })
}

/// A FHIR version by its name or release (`r5`, `5.0.0`).
fn fhir_version(name: &str) -> PyResult<FhirVersion> {
    name.parse::<FhirVersion>()
        .map_err(|e| BadInputError::new_err(e.to_string()))
}

/// The typed Arrow schema of a resource type of a FHIR version (`pyarrow.Schema`).
#[pyfunction]
#[pyo3(signature = (resource_type, fhir_version = "r4"))]
fn schema<'py>(
    py: Python<'py>,
    resource_type: &str,
    fhir_version: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let v = self::fhir_version(fhir_version)?;
    match fhir2parquet::schema::node::arrow_schema(v, resource_type) {
        Some(s) => arrow_py::schema(py, &s),
        None => Err(BadInputError::new_err(format!(
            "{resource_type} is not a resource type of FHIR {v} ({})",
            v.release()
        ))),
    }
}

/// The resource types a FHIR version defines.
#[pyfunction]
#[pyo3(signature = (fhir_version = "r4"))]
fn resource_types(fhir_version: &str) -> PyResult<Vec<String>> {
    Ok(self::fhir_version(fhir_version)?
        .model()
        .resource_types()
        .into_iter()
        .map(str::to_string)
        .collect())
}

/// Decodes NDJSON lines (a `pyarrow` string array, one resource a line; empty lines skipped)
/// of one resource type into a batch of its typed schema. `first_line` numbers the lines in
/// errors.
#[pyfunction]
#[pyo3(signature = (resource_type, lines, first_line, fhir_version = "r4"))]
fn decode<'py>(
    py: Python<'py>,
    resource_type: &str,
    lines: &Bound<'py, PyAny>,
    first_line: u64,
    fhir_version: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let version = self::fhir_version(fhir_version)?;
    let data = arrow_py::array_data(lines)?;
    let array = arrow::array::make_array(data);
    let array = arrow::compute::cast(&array, &arrow::datatypes::DataType::Utf8)
        .map_err(|e| BadInputError::new_err(e.to_string()))?;
    let lines = array
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("cast to Utf8");
    let mut decoder = fhir2parquet::decode::ResourceDecoder::new(version, resource_type)
        .ok_or_else(|| {
            BadInputError::new_err(format!(
                "{resource_type} is not a resource type of FHIR {version}"
            ))
        })?;
    let batch = py
        .detach(|| -> anyhow::Result<RecordBatch> {
            for i in 0..lines.len() {
                if lines.is_null(i) || lines.value(i).trim().is_empty() {
                    continue;
                }
                let at = first_line + i as u64;
                let json = fhir2parquet::json::parse(lines.value(i))
                    .map_err(|e| anyhow::anyhow!("line {at}: not JSON: {e}"))?;
                let found = match &json {
                    fhir2parquet::json::Json::Obj(_) => json
                        .get("resourceType")
                        .and_then(|t| t.as_str())
                        .map(str::to_string),
                    _ => anyhow::bail!("line {at}: not a JSON object"),
                };
                if found.as_deref() != Some(resource_type) {
                    anyhow::bail!(
                        "line {at}: a {} where {resource_type} was expected",
                        found.as_deref().unwrap_or("resource without resourceType")
                    );
                }
                decoder.decode(&json);
            }
            Ok(decoder.flush()?)
        })
        .map_err(|e| error(e, Kind::Input))?;
    arrow_py::batch(py, batch)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("Fhir2ParquetError", py.get_type::<Fhir2ParquetError>())?;
    m.add("BadInputError", py.get_type::<BadInputError>())?;
    m.add("StoreError", py.get_type::<StoreError>())?;
    m.add("ServerError", py.get_type::<ServerError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(cli, m)?)?;
    m.add_function(wrap_pyfunction!(convert, m)?)?;
    m.add_function(wrap_pyfunction!(export, m)?)?;
    m.add_function(wrap_pyfunction!(table, m)?)?;
    m.add_function(wrap_pyfunction!(sql, m)?)?;
    m.add_function(wrap_pyfunction!(view, m)?)?;
    m.add_function(wrap_pyfunction!(schema, m)?)?;
    m.add_function(wrap_pyfunction!(resource_types, m)?)?;
    m.add_function(wrap_pyfunction!(decode, m)?)?;
    Ok(())
}
